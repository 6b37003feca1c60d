"""The guest's only way out: an SSH remote forward from the guest's 127.0.0.1:3128 to the
workspace's egress proxy on a host Unix socket (DESIGN.md section 4), and a second one in
the same connection from the guest's 127.0.0.1:3129 to its credential gateway's socket.

agentbox holds the SSH connection from the host, so the guest can neither open nor widen
it. The connection is OpenSSH's (`ssh -N -R 127.0.0.1:3128:PROXY_SOCKET -R 127.0.0.1:3129:GATEWAY_SOCKET`): each guest
connection arrives as its own channel and OpenSSH, in C, relays it to its own connection
to the proxy; a forward in Python (paramiko) halved the egress throughput. This module
holds that `ssh`: it pins the guest's host key (a known-hosts file of one line, strict
checking), reads its log to know when the forward is up, and starts it again with
backoff when it drops (a reset replaces the VM). While it is down nothing listens on the
guest's port 3128, so the guest has no egress at all; the `ssh` dies with its holder
(PR_SET_PDEATHSIG). A host key that does not match the pinned one ends the holder:
retrying would only knock on a door that is not ours (its supervisor records the
mismatch in the audit log).
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from agentbox.config.atomic_file import write_atomically
from agentbox.errors import GuestError, HostKeyMismatch
from agentbox.host.process_identity import spawn_child_reading_stderr
from agentbox.model.remote_host import JumpHost
from agentbox.remote.ssh import SshTarget

log = logging.getLogger(__name__)

GUEST_PROXY_PORT = 3128
GUEST_GATEWAY_PORT = 3129  # model.providers.GUEST_GATEWAY_PORT: the base URLs the guest is given
RETRY_S = 0.2  # first retry: a reverted guest's sshd is back within moments
MAX_RETRY_S = 5.0  # a VM that stays down costs one refused connect per 5 s, not 5 per second
# After a drop from a live connection, retries stay at RETRY_S this long: a reset's power
# cycle (destroy, revert: ~5 s here) doubled the delay past the guest's return, and the
# reset waited for the forward (refused connects to a port nobody listens on cost little).
QUICK_RETRY_WINDOW_S = 30.0
HOST_KEY_MISMATCH_EXIT = 12  # HostKeyMismatch's exit code: the supervisor stops retrying
KEEPALIVE_S = 5  # notices a vanished VM within seconds, not at the next channel
HOST_ALIAS = "agentbox-guest"  # the known-hosts name: the pin holds whatever the port
_FORWARD_UP = "remote forward success"
_HOST_KEY_REFUSED = ("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED")
_INFORMATIONAL = ("OpenSSH_", "Authenticated to", "Transferred:", "Bytes per second:")
_HOST_KEY_ALGORITHMS = {"ssh-rsa": "rsa-sha2-512,rsa-sha2-256"}


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
                 guest_port: int = GUEST_PROXY_PORT, gateway_socket: Path | None = None,
                 gateway_port: int = GUEST_GATEWAY_PORT) -> None:
    """Keep the remote forward(s) up until `stop` is set, reconnecting whenever they drop.
    Raises HostKeyMismatch (after recording it in the state file) instead of retrying."""
    state = _StateFile(path=state_file)
    known_hosts = state_file.with_name("forward.known_hosts")
    write_atomically(path=known_hosts, data=f"{HOST_ALIAS} {_key_fields(target.host_key)}\n".encode())
    forwards = [(guest_port, proxy_socket)] + ([(gateway_port, gateway_socket)] if gateway_socket else [])
    argv = ssh_argv(target=target, known_hosts=known_hosts, forwards=forwards)
    delay, dropped_at = RETRY_S, None
    while not stop.is_set():
        run = _SshRun(argv=argv, state=state, forwards=len(forwards))
        run.wait(stop=stop)
        if run.was_connected:
            dropped_at = time.monotonic()
        if run.host_key_refused:
            message = (f"the guest's SSH host key on port {target.port} is not the pinned one: "
                       "the forward stays down")
            state.write(connected=False, error=message)
            raise HostKeyMismatch(message)
        state.write(connected=False, error="stopped" if stop.is_set() else run.error or "the forward dropped")
        # It was up a moment ago: the guest is probably being reset, back in moments. Never
        # up, or down for long: back off.
        quick = dropped_at is not None and time.monotonic() - dropped_at < QUICK_RETRY_WINDOW_S
        delay = RETRY_S if quick else min(delay * 2, MAX_RETRY_S)
        stop.wait(delay)
    state.write(connected=False, error="stopped")


def ssh_argv(*, target: SshTarget, known_hosts: Path, forwards: list[tuple[int, Path]]) -> list[str]:
    """`forwards`: (guest port, host Unix socket) pairs, all in one connection."""
    ssh = shutil.which("ssh")
    if ssh is None:
        raise GuestError("OpenSSH's ssh client is not installed: the egress forward needs it",
                         hint="install openssh-client")
    key_type = _key_fields(target.host_key).split()[0]
    return [
        ssh, "-N", "-v", "-F", "/dev/null",  # -v: its log says when the forward is up
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", f"IdentityFile={target.private_key}",
        "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null", "-o", f"HostKeyAlias={HOST_ALIAS}",
        "-o", f"HostKeyAlgorithms={_HOST_KEY_ALGORITHMS.get(key_type, key_type)}",
        "-o", "UpdateHostKeys=no", "-o", "CheckHostIP=no",
        "-o", "ExitOnForwardFailure=yes", "-o", "ConnectTimeout=10",
        "-o", f"ServerAliveInterval={KEEPALIVE_S}", "-o", "ServerAliveCountMax=2",
        "-o", "ClearAllForwardings=no", "-o", "ForwardAgent=no", "-o", "ForwardX11=no",
        *(arg for port, socket in forwards for arg in ("-R", f"127.0.0.1:{port}:{socket}")),
        *(() if target.jump is None else ("-o", f"ProxyCommand={shlex.join(jump_argv(ssh=ssh, jump=target.jump))}")),
        "-p", str(target.port), "-l", target.user, target.host,
    ]


def jump_argv(*, ssh: str, jump: JumpHost) -> list[str]:
    """OpenSSH's own connection to the libvirt host, relaying stdin/stdout to the guest's
    host forward on that host's loopback (`-W`): the forward's channels take that path."""
    return [
        ssh, "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={jump.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        *(("-o", "IdentitiesOnly=yes", "-i", str(jump.key)) if jump.key else ()),
        "-o", "ConnectTimeout=10", "-o", "ForwardAgent=no", "-W", "%h:%p",
        "-p", str(jump.port), *(("-l", jump.user) if jump.user else ()), jump.host,
    ]


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


class _SshRun:
    """One `ssh` from start to exit, its log read as it comes: the forward's state follows it.
    Connected means every forward is up (OpenSSH logs one success per forward; with
    ExitOnForwardFailure one that fails ends the whole `ssh`)."""

    def __init__(self, *, argv: list[str], state: _StateFile, forwards: int = 1) -> None:
        self._state = state
        self._forwards = forwards
        self._up = 0
        self.was_connected = False
        self.host_key_refused = False
        self.error = ""
        self._child = spawn_child_reading_stderr(argv=argv)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def wait(self, *, stop: threading.Event) -> None:
        while self._child.poll() is None:
            if stop.wait(0.25):
                self._child.terminate()
                try:
                    self._child.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._child.kill()
                    self._child.wait()
        self._reader.join(timeout=5)

    def _read(self) -> None:
        assert self._child.stderr is not None
        for raw in self._child.stderr:
            line = raw.decode(errors="replace").rstrip()
            if _FORWARD_UP in line:
                self._up += 1
                if self._up >= self._forwards:
                    self.was_connected = True
                    self._state.write(connected=True)
                    log.info("forwarding the guest's ports to the egress proxy and the gateway")
            elif any(marker in line for marker in _HOST_KEY_REFUSED):
                self.host_key_refused = True
            if line.startswith("debug"):
                continue  # its -v chatter: one line per guest connection would flood the log
            if not line.startswith(_INFORMATIONAL):
                self.error = line
            log.warning("ssh: %s", line)


def _key_fields(host_key: str) -> str:
    """"TYPE BASE64" of a pinned key line (a trailing comment dropped)."""
    fields = host_key.split()
    if len(fields) < 2:
        raise GuestError(f"the pinned host key is not an OpenSSH public key line: {host_key!r}")
    return f"{fields[0]} {fields[1]}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")

