"""Host ports for the guests' SSH forwards (QEMU's user-net hostfwd on 127.0.0.1)."""

from __future__ import annotations

import socket

from agentbox.errors import AgentboxError
from agentbox.services.context import ServiceContext


def free_ssh_port(*, ctx: ServiceContext) -> int:
    """A free loopback port that no workspace records, as its SSH port or its standby copy's
    (a stopped workspace listens nowhere but keeps its port for its next start)."""
    taken = {port for record in ctx.records.readable() for port in (record.ssh_port, record.standby_port)}
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            return port
    raise AgentboxError("could not find a free port on 127.0.0.1 for SSH")
