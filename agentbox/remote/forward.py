"""The guest's only way out: an SSH remote forward from the guest's 127.0.0.1:3128 to the
workspace's egress proxy on a host Unix socket (DESIGN.md section 4).

agentbox holds the SSH connection from the host, so the guest can neither open nor widen
it. Each guest connection arrives as its own SSH channel and gets its own connection to
the proxy (unlike QEMU's guestfwd, which multiplexes everything onto one stream). When
the connection drops (a reset replaces the VM), the holder reconnects; while it is down
nothing listens on the guest's port 3128, so the guest has no egress at all.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import paramiko

from agentbox.config.atomic_file import write_atomically
from agentbox.errors import GuestError
from agentbox.remote.ssh import SshTarget, connect

log = logging.getLogger(__name__)

GUEST_PROXY_PORT = 3128
RETRY_S = 0.2  # reconnecting to 127.0.0.1 is refused at once while the VM is down: cheap
KEEPALIVE_S = 5  # notices a vanished VM within seconds, not at the next channel
_CHUNK = 65536


@dataclass(frozen=True)
class ForwardState:
    connected: bool
    since: str  # ISO 8601 UTC of the last change
    error: str = ""


def read_state(*, path: Path) -> ForwardState | None:
    try:
        return ForwardState(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def hold_forward(*, target: SshTarget, proxy_socket: Path, state_file: Path, stop: threading.Event,
                 guest_port: int = GUEST_PROXY_PORT) -> None:
    """Keep the remote forward up until `stop` is set, reconnecting whenever it drops."""
    while not stop.is_set():
        try:
            client = connect(target=target, timeout_s=10.0)
        except GuestError as exc:
            _write_state(state_file, ForwardState(connected=False, since=_now(), error=exc.message))
            stop.wait(RETRY_S)
            continue
        try:
            _serve(client=client, proxy_socket=proxy_socket, state_file=state_file, stop=stop,
                   guest_port=guest_port)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            _write_state(state_file, ForwardState(connected=False, since=_now(), error=str(exc)))
            stop.wait(RETRY_S)
        finally:
            client.close()
    _write_state(state_file, ForwardState(connected=False, since=_now(), error="stopped"))


def _serve(*, client: paramiko.SSHClient, proxy_socket: Path, state_file: Path, stop: threading.Event,
           guest_port: int) -> None:
    transport = client.get_transport()
    if transport is None:
        raise EOFError("the SSH connection closed at once")
    transport.set_keepalive(KEEPALIVE_S)
    transport.request_port_forward("127.0.0.1", guest_port)
    _write_state(state_file, ForwardState(connected=True, since=_now()))
    log.info("forwarding guest 127.0.0.1:%d to %s", guest_port, proxy_socket)
    while not stop.is_set() and transport.is_active():
        channel = transport.accept(timeout=0.25)  # also how soon a dropped connection is noticed
        if channel is not None:
            threading.Thread(target=_bridge, args=(channel, proxy_socket), daemon=True).start()
    if not stop.is_set():
        raise EOFError("the SSH connection to the guest dropped")


def _bridge(channel: paramiko.Channel, proxy_socket: Path) -> None:
    """One guest connection ↔ one proxy connection, until both sides are done."""
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(str(proxy_socket))
    except OSError as exc:  # proxy down: the guest's connection just closes (fail closed)
        log.warning("egress proxy unreachable at %s: %s", proxy_socket, exc)
        upstream.close()
        channel.close()
        return
    open_ends: set[paramiko.Channel | socket.socket] = {channel, upstream}
    try:
        while open_ends:
            readable, _, _ = select.select(list(open_ends), [], [], 30.0)
            for end in readable:
                data = end.recv(_CHUNK)
                other = upstream if end is channel else channel
                if data:
                    other.sendall(data)
                    continue
                open_ends.discard(end)
                if other is channel:
                    channel.shutdown_write()
                else:
                    upstream.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # either side vanished mid-stream: close both
    finally:
        upstream.close()
        channel.close()


def _write_state(path: Path, state: ForwardState) -> None:
    write_atomically(path=path, data=(json.dumps(asdict(state)) + "\n").encode())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")

