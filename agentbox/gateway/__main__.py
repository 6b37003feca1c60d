"""`python -m agentbox.gateway`: one workspace's credential gateway (see server.py) until
SIGTERM. Started by the workspace's supervisor; writes its pid file once it listens."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from agentbox.errors import AgentboxError
from agentbox.gateway.server import CredentialGateway, GatewayOptions, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentbox.gateway", description=__doc__)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--socket", type=Path, required=True, help="the Unix socket to listen on (made 0600)")
    parser.add_argument("--token-file", type=Path, required=True, help="the workspace's phantom token file")
    parser.add_argument("--usage-file", type=Path, required=True)
    parser.add_argument("--policy-file", type=Path, required=True, help="the workspace's network policy")
    parser.add_argument("--config-dir", type=Path, required=True, help="agentbox's config dir (the API keys)")
    parser.add_argument("--audit-log", type=Path)
    parser.add_argument("--pid-file", type=Path)
    parser.add_argument("--pin", action="append", default=[], metavar="HOST=IP")
    parser.add_argument("--ca-bundle", type=Path, help="CAs trusted besides the system's (tests)")
    parser.add_argument("--upstream-port", type=int, default=443)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s agentbox.gateway %(levelname)s %(message)s")
    pins = []
    for pin in args.pin:
        host, sep, address = pin.partition("=")
        if not sep:
            parser.error(f"--pin {pin!r}: expected HOST=IP")
        pins.append((host.lower(), address))
    options = GatewayOptions(workspace=args.workspace, socket_path=args.socket, token_file=args.token_file,
                             usage_file=args.usage_file, policy_file=args.policy_file, config_dir=args.config_dir,
                             audit_log=args.audit_log, pins=tuple(pins), extra_ca=args.ca_bundle,
                             upstream_port=args.upstream_port)

    def ready(_: CredentialGateway) -> None:
        if args.pid_file is not None:
            args.pid_file.write_text(f"{os.getpid()}\n")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(options=options, stop=stop, on_ready=ready)

    try:
        asyncio.run(run())
    except AgentboxError as exc:
        logging.getLogger("agentbox.gateway").error("%s", exc.message)
        return 1
    finally:
        if args.pid_file is not None:
            with contextlib.suppress(OSError):
                if args.pid_file.read_text().strip() == str(os.getpid()):
                    args.pid_file.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
