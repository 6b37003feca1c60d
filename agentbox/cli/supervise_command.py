"""`agentbox supervise NAME`: the workspace's supervisor process (services/supervisor.py).
Started detached by agentbox itself when the workspace's VM comes up; not for people."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from agentbox import bootstrap


def add_supervise_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    supervise = sub.add_parser("supervise")  # no help: it stays out of the command list
    supervise.add_argument("name")
    supervise.set_defaults(handler=supervise_command)


def supervise_command(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s agentbox.supervisor %(levelname)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    services = bootstrap.build_services()
    outcome = services.supervisor.run(name=args.name, stop=stop)
    logging.getLogger("agentbox.supervisor").info("%s: %s", args.name, outcome.reason)
    return 0
