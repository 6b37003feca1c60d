"""`python -m agentbox.remote`: hold one workspace's egress forward (see forward.py) until
SIGTERM. Started by the workspace's supervisor; writes its PID and a state file. Exits
with HOST_KEY_MISMATCH_EXIT when the guest's host key is not the pinned one."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from agentbox.errors import AgentboxError, HostKeyMismatch
from agentbox.model.remote_host import jump_host_of
from agentbox.remote.forward import GUEST_GATEWAY_PORT, GUEST_PROXY_PORT, HOST_KEY_MISMATCH_EXIT, hold_forward
from agentbox.remote.ssh import SshTarget


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentbox.remote", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="the workspace's SSH port on 127.0.0.1")
    parser.add_argument("--user", required=True)
    parser.add_argument("--key", type=Path, required=True, help="the workspace's client key")
    parser.add_argument("--host-key", required=True, help="the pinned guest host key (public)")
    parser.add_argument("--proxy-socket", type=Path, required=True, help="the egress proxy's Unix socket")
    parser.add_argument("--state-file", type=Path, required=True)
    parser.add_argument("--pid-file", type=Path, required=True)
    parser.add_argument("--guest-port", type=int, default=GUEST_PROXY_PORT)
    parser.add_argument("--gateway-socket", type=Path, help="the credential gateway's Unix socket")
    parser.add_argument("--gateway-port", type=int, default=GUEST_GATEWAY_PORT)
    parser.add_argument("--remote-uri", default="", help="the remote libvirt host's URI: the forward jumps through it")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s agentbox.forward %(levelname)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    args.pid_file.write_text(f"{os.getpid()}\n")
    try:
        hold_forward(target=SshTarget(host="127.0.0.1", port=args.port, user=args.user, private_key=args.key,
                                      host_key=args.host_key,
                                      jump=jump_host_of(args.remote_uri) if args.remote_uri else None),
                     proxy_socket=args.proxy_socket, state_file=args.state_file, stop=stop,
                     guest_port=args.guest_port, gateway_socket=args.gateway_socket,
                     gateway_port=args.gateway_port)
    except HostKeyMismatch as exc:
        logging.getLogger("agentbox.forward").error("%s", exc.message)
        return HOST_KEY_MISMATCH_EXIT
    except AgentboxError as exc:  # e.g. no ssh client: the supervisor retries with backoff
        logging.getLogger("agentbox.forward").error("%s", exc)
        return 1
    finally:
        if args.pid_file.read_text().strip() == str(os.getpid()):
            args.pid_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
