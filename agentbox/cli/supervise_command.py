"""`python -m agentbox.cli.supervise_command NAME`: the workspace's supervisor process
(services/supervisor.py). Started detached by agentbox itself when the workspace's VM comes
up; not a command for people, so it is not among the CLI's commands."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from agentbox import bootstrap
from agentbox.errors import AgentboxError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentbox.cli.supervise_command", description=__doc__)
    parser.add_argument("name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s agentbox.supervisor %(levelname)s %(message)s")
    log = logging.getLogger("agentbox.supervisor")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    try:
        outcome = bootstrap.build_services().supervisor.run(name=args.name, stop=stop)
    except AgentboxError as exc:
        log.error("%s: %s", args.name, exc.message)
        return exc.exit_code
    log.info("%s: %s", args.name, outcome.reason)
    return 0


if __name__ == "__main__":
    sys.exit(main())
