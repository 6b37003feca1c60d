"""The guest's only way out: an SSH remote forward from the guest's 127.0.0.1:3128 to the
workspace's egress proxy on a host Unix socket (DESIGN.md section 4).

agentbox holds the SSH connection from the host, so the guest can neither open nor widen
it. Each guest connection arrives as its own SSH channel and gets its own connection to
the proxy (unlike QEMU's guestfwd, which multiplexes everything onto one stream). When
the connection drops (a reset replaces the VM), the holder reconnects with backoff; while
it is down nothing listens on the guest's port 3128, so the guest has no egress at all.
A host key that does not match the pinned one ends the holder: retrying would only knock
on a door that is not ours (its supervisor records the mismatch in the audit log).
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
from agentbox.errors import GuestError, HostKeyMismatch
from agentbox.remote.ssh import SshTarget, connect

log = logging.getLogger(__name__)

GUEST_PROXY_PORT = 3128
RETRY_S = 0.2  # first retry: a reverted guest's sshd is back within moments
MAX_RETRY_S = 5.0  # a VM that stays down costs one refused connect per 5 s, not 5 per second
HOST_KEY_MISMATCH_EXIT = 12  # HostKeyMismatch's exit code: the supervisor stops retrying
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
    """Keep the remote forward up until `stop` is set, reconnecting whenever it drops.
    Raises HostKeyMismatch (after recording it in the state file) instead of retrying."""
    state = _StateFile(path=state_file)
    delay = RETRY_S
    while not stop.is_set():
        try:
            client = connect(target=target, timeout_s=10.0)
        except HostKeyMismatch as exc:
            state.write(connected=False, error=exc.message)
            raise
        except GuestError as exc:
            state.write(connected=False, error=exc.message)
            stop.wait(delay)
            delay = min(delay * 2, MAX_RETRY_S)
            continue
        try:
            _serve(client=client, proxy_socket=proxy_socket, state=state, stop=stop, guest_port=guest_port)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            state.write(connected=False, error=str(exc))
            delay = RETRY_S  # it was up: the guest is probably being reset, back in moments
            stop.wait(delay)
        finally:
            client.close()
    state.write(connected=False, error="stopped")


class _StateFile:
    """The holder's state for others to read; written (with fsync) only when it changes."""

    def __init__(self, *, path: Path) -> None:
        self._path = path
        self._last: tuple[bool, str] | None = None

    def write(self, *, connected: bool, error: str = "") -> None:
        if self._last == (connected, error):
            return
        self._last = (connected, error)
        write_atomically(path=self._path,
                         data=(json.dumps(asdict(ForwardState(connected=connected, since=_now(), error=error)))
                               + "\n").encode())


def _serve(*, client: paramiko.SSHClient, proxy_socket: Path, state: _StateFile, stop: threading.Event,
           guest_port: int) -> None:
    transport = client.get_transport()
    if transport is None:
        raise EOFError("the SSH connection closed at once")
    transport.set_keepalive(KEEPALIVE_S)
    transport.request_port_forward("127.0.0.1", guest_port)
    state.write(connected=True)
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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")

