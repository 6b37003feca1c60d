"""`python -m agentbox.egress`: run one workspace's egress proxy (see daemon.py)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from agentbox.egress.daemon import DaemonOptions, run_daemon
from agentbox.errors import AgentboxError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentbox.egress", description=__doc__)
    parser.add_argument("--proxy-socket", type=Path, required=True, help="Unix socket the proxy listens on")
    parser.add_argument("--control-socket", type=Path, required=True, help="Unix socket for control requests")
    parser.add_argument("--policy-file", type=Path, required=True, help="JSON policy, rewritten when it changes")
    parser.add_argument("--log-file", type=Path, required=True, help="JSONL file the decisions are appended to")
    parser.add_argument("--pid-file", type=Path, help="written once the sockets listen")
    parser.add_argument("--tcp-port", type=int, help="also listen on 127.0.0.1:PORT (0: any free port)")
    parser.add_argument("--approval-timeout", type=float, default=30.0, help="seconds a held connection waits")
    parser.add_argument("--audit-log", type=Path, help="the workspace's audit log: decisions are appended there too")
    parser.add_argument("--pin", action="append", default=[], metavar="NAME=IP",
                        help="take NAME as IP without looking it up (repeatable)")
    parser.add_argument("--session-file", type=Path, help="the workspace's session file: its egress budget")
    parser.add_argument("--usage-file", type=Path, help="where the session's egress byte count is written")
    args = parser.parse_args(argv)
    pins = tuple(pin.partition("=")[::2] for pin in args.pin)
    if any(not name or not address for name, address in pins):
        parser.error("--pin wants NAME=IP, e.g. --pin web.test=127.0.0.1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s agentbox.egress %(levelname)s %(message)s")
    options = DaemonOptions(
        proxy_socket=args.proxy_socket, control_socket=args.control_socket, policy_file=args.policy_file,
        log_file=args.log_file, pid_file=args.pid_file, tcp_port=args.tcp_port,
        approval_timeout=args.approval_timeout, audit_log=args.audit_log,
        pinned_hosts=pins, session_file=args.session_file, usage_file=args.usage_file,
    )
    try:
        run_daemon(options=options)
    except AgentboxError as exc:
        print(f"agentbox egress: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
