"""Commands in the guest over SSH, with the guest's host key pinned.

Every connection uses the workspace's own client key and accepts exactly one host key: the
one agentbox generated and gave the guest through cloud-init. paramiko's RejectPolicy
refuses any host without a pinned key; a host with a different key raises
BadHostKeyException, which becomes HostKeyMismatch and is never retried.

All paramiko and socket errors are turned into agentbox errors in `_translate`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import logging
import select
import shlex
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko

from agentbox.errors import GuestError, HostKeyMismatch
from agentbox.model.remote_host import JumpHost
from agentbox.model.progress import CancelToken, Progress, ProgressCallback

# paramiko logs every failed handshake at ERROR from its transport thread; with no logging
# configured Python would print those to stderr. We report failures ourselves.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

CONNECT_TIMEOUT_S = 10.0  # per attempt; a TCG guest can be slow to send its banner
RETRY_INTERVAL_S = 1.0
AUTH_ATTEMPTS = 5  # cloud-init may still be writing authorized_keys when sshd is up
_POLL_S = 0.05
_CHUNK = 32768
_STDERR_TAIL = 2000
# What paramiko and the socket layer raise; anything else is a bug and propagates as is.
_SSH_ERRORS = (paramiko.SSHException, OSError, EOFError)


@dataclass(frozen=True)
class SshTarget:
    host: str  # "127.0.0.1": the QEMU hostfwd of the workspace
    port: int
    user: str
    private_key: Path  # OpenSSH ed25519 private key file
    host_key: str  # pinned "ssh-ed25519 AAAA..." line (a trailing comment is ignored)
    # The remote libvirt host whose 127.0.0.1 the host forward listens on; None: this machine.
    jump: JumpHost | None = None


class _Retry(enum.Enum):
    NEVER = "never"
    LIMITED = "limited"  # authentication: a few attempts
    UNTIL_TIMEOUT = "until timeout"  # the guest is not up yet


@dataclass(frozen=True)
class _Failure:
    error: GuestError
    retry: _Retry


def wait_until_ready(
    *,
    target: SshTarget,
    timeout_s: float,
    cancel: CancelToken,
    on_progress: ProgressCallback,
    check_alive: Callable[[], None] | None = None,
) -> None:
    """Return once the guest accepts an authenticated SSH session.

    Connection refused/reset, banner and timeout errors are retried until `timeout_s`;
    `check_alive()` is called every round and may raise (the VM died). A wrong host key
    raises HostKeyMismatch at once.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    auth_failures = 0
    attempt = 0
    last: _Failure | None = None
    while True:
        cancel.raise_if_cancelled()
        if check_alive is not None:
            check_alive()
        attempt += 1
        elapsed = time.monotonic() - started
        on_progress(
            Progress(
                step="waiting for SSH",
                detail=f"attempt {attempt}, {elapsed:.0f} s"
                + (f": {last.error.message}" if last is not None else ""),
            )
        )
        remaining = deadline - time.monotonic()
        try:
            client = _connect(target=target, timeout_s=max(0.5, min(CONNECT_TIMEOUT_S, remaining)))
        except _SSH_ERRORS as exc:
            last = _translate(exc, target=target)
            if last.retry is _Retry.NEVER:
                raise last.error from None
            if last.retry is _Retry.LIMITED:
                auth_failures += 1
                if auth_failures >= AUTH_ATTEMPTS:
                    raise last.error from None
        else:
            client.close()
            on_progress(Progress(step="waiting for SSH", detail="the guest answers SSH", fraction=1.0))
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise GuestError(
                f"the guest did not answer SSH on {target.host}:{target.port} within {timeout_s:g} s"
                f" (last error: {last.error.message})",
                hint="it may still be booting (a first boot under TCG takes minutes) or cloud-init"
                " may have failed: look at the guest's console log, or try again with a longer timeout",
            )
        cancel.wait(min(RETRY_INTERVAL_S, remaining))


def run_command(
    *,
    target: SshTarget,
    argv: Sequence[str],
    stdout: Callable[[bytes], None],
    stderr: Callable[[bytes], None],
    stdin: bytes | Callable[[], bytes] | None = None,
    timeout_s: float | None = None,
    cancel: CancelToken | None = None,
) -> int:
    """Run `argv` in the guest (quoted with shlex.join for the remote shell).

    Output chunks go to `stdout` / `stderr` as they arrive. Returns the exit status, or -1
    when the command ended without one (killed by a signal). Stdin gets `stdin` (if any)
    and then end-of-file, so commands that read it never wait. A callable `stdin` is called
    once the command has started, for input that must be as fresh as possible (the time).
    """
    if not argv:
        raise GuestError("no command given to run in the guest")
    command = shlex.join(argv)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        client = _connect(target=target, timeout_s=CONNECT_TIMEOUT_S)
    except _SSH_ERRORS as exc:
        raise _translate(exc, target=target).error from None
    try:
        return _exec(
            client=client,
            command=command,
            stdout=stdout,
            stderr=stderr,
            stdin=stdin or b"",
            deadline=deadline,
            timeout_s=timeout_s,
            cancel=cancel,
        )
    except _SSH_ERRORS as exc:
        raise _translate(exc, target=target).error from None
    finally:
        client.close()


def run_checked(*, target: SshTarget, argv: Sequence[str], timeout_s: float | None = None) -> bytes:
    """Run `argv` and return its stdout; a non-zero exit raises GuestError with the stderr tail."""
    out = bytearray()
    err = bytearray()
    status = run_command(target=target, argv=argv, stdout=out.extend, stderr=err.extend, timeout_s=timeout_s)
    if status != 0:
        tail = bytes(err[-_STDERR_TAIL:]).decode("utf-8", errors="replace").strip()
        how = f"exited with status {status}" if status >= 0 else "was killed"
        raise GuestError(
            f"`{shlex.join(argv)}` {how} in the guest" + (f": {tail}" if tail else ""),
        )
    return bytes(out)


def _exec(
    *,
    client: paramiko.SSHClient,
    command: str,
    stdout: Callable[[bytes], None],
    stderr: Callable[[bytes], None],
    stdin: bytes | Callable[[], bytes],
    deadline: float | None,
    timeout_s: float | None,
    cancel: CancelToken | None,
) -> int:
    transport = client.get_transport()
    if transport is None:
        raise GuestError("the SSH connection to the guest closed before the command started")
    channel = transport.open_session(timeout=CONNECT_TIMEOUT_S)
    try:
        channel.exec_command(command)
        pending = memoryview(stdin() if callable(stdin) else stdin)
        if not pending:
            channel.shutdown_write()
        while True:
            if cancel is not None:
                cancel.raise_if_cancelled()
            if deadline is not None and time.monotonic() > deadline:
                raise GuestError(
                    f"`{command}` did not finish within {timeout_s:g} s in the guest",
                    hint="agentbox closed its session (the command may still be running in the"
                    " guest); give it a longer timeout if it needs one",
                )
            if pending and (channel.eof_received or channel.closed):
                pending = pending[:0]  # the command ended without reading all its input
            # Stdin is fed only as far as the channel window allows, interleaved with
            # reading output, so a command that writes before it reads cannot deadlock us.
            if pending and channel.send_ready():
                sent = channel.send(bytes(pending[:_CHUNK]))
                pending = pending[sent:]
                if not pending:
                    channel.shutdown_write()
            while channel.recv_ready():
                stdout(channel.recv(_CHUNK))
            while channel.recv_stderr_ready():
                stderr(channel.recv_stderr(_CHUNK))
            if channel.eof_received or channel.closed:
                if channel.recv_ready() or channel.recv_stderr_ready():
                    continue
                # All output is in; the exit status may arrive just after the EOF.
                if channel.exit_status_ready():
                    status = channel.recv_exit_status()
                    if status == -1 and not transport.is_active():
                        raise GuestError(
                            f"the SSH connection to the guest was lost while running `{command}`"
                        )
                    return status
                time.sleep(_POLL_S)
                continue
            # Wakes on stdout or stderr data and on EOF/close; the timeout covers the
            # send window reopening, cancel and the deadline.
            select.select([channel], [], [], _POLL_S)
    finally:
        channel.close()


def connect(*, target: SshTarget, timeout_s: float) -> paramiko.SSHClient:
    """An authenticated client with the pinned host key; GuestError if it cannot be had."""
    try:
        return _connect(target=target, timeout_s=timeout_s)
    except _SSH_ERRORS as exc:
        raise _translate(exc, target=target).error from None


def _connect(*, target: SshTarget, timeout_s: float) -> paramiko.SSHClient:
    pkey = _load_client_key(target.private_key)
    jump = None if target.jump is None else _connect_jump(jump=target.jump, timeout_s=timeout_s)
    try:
        sock = None if jump is None else _tunnel(jump=jump, target=target, timeout_s=timeout_s)
    except BaseException:
        if jump is not None:
            jump.close()
        raise
    client = _JumpedClient(jump) if jump is not None else paramiko.SSHClient()
    # No system or user known_hosts: the pinned key is the only one this client knows, and
    # RejectPolicy refuses any host for which it knows none. Never AutoAddPolicy.
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    key_type, key = _pinned_key(target)
    names = [f"[{target.host}]:{target.port}"] + ([target.host] if target.port == 22 else [])
    for name in names:
        client.get_host_keys().add(name, key_type, key)
    try:
        client.connect(
            target.host,
            port=target.port,
            username=target.user,
            pkey=pkey,
            timeout=timeout_s,
            banner_timeout=timeout_s,
            auth_timeout=timeout_s,
            channel_timeout=timeout_s,
            look_for_keys=False,
            allow_agent=False,
            sock=sock,
        )
    except BaseException:
        client.close()
        raise
    return client


class _JumpedClient(paramiko.SSHClient):
    """A guest session whose TCP connection is a channel of a connection to the libvirt
    host: closing it closes that connection too."""

    def __init__(self, jump: paramiko.SSHClient) -> None:
        super().__init__()
        self._jump = jump

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._jump.close()


def _connect_jump(*, jump: JumpHost, timeout_s: float) -> paramiko.SSHClient:
    """An SSH connection to the libvirt host, its key checked against `jump.known_hosts`
    (libvirt's own check of that host is its business; ours never skips it)."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.load_host_keys(str(jump.known_hosts))
    except FileNotFoundError:
        client.close()
        raise GuestError(
            f"no known_hosts file {jump.known_hosts} for the libvirt host {jump.host}",
            hint="connect once with `ssh -p PORT USER@HOST` to record its key, or name a file with"
            " `known_hosts=` in libvirt_uri",
        ) from None
    try:
        client.connect(jump.host, port=jump.port, username=jump.user or None,
                       key_filename=str(jump.key) if jump.key else None, look_for_keys=jump.key is None,
                       allow_agent=jump.key is None, timeout=timeout_s, banner_timeout=timeout_s,
                       auth_timeout=timeout_s, channel_timeout=timeout_s)
    except paramiko.BadHostKeyException:
        client.close()
        raise HostKeyMismatch(
            f"the libvirt host {jump.host}:{jump.port} offered a host key that {jump.known_hosts} does not have"
            " for it: refusing to connect",
            hint="check that host; if its key really changed, update the known_hosts file") from None
    except paramiko.SSHException as exc:
        client.close()
        if "not found in known_hosts" in str(exc):
            raise GuestError(f"the libvirt host [{jump.host}]:{jump.port} is not in {jump.known_hosts}",
                             hint="connect once with the system ssh to record its key") from None
        raise GuestError(f"SSH to the libvirt host {jump.host}:{jump.port} failed: {exc}") from None
    except BaseException:
        client.close()
        raise
    return client


def _tunnel(*, jump: paramiko.SSHClient, target: SshTarget, timeout_s: float) -> paramiko.Channel:
    """A direct-tcpip channel to the guest's host forward on the libvirt host's loopback."""
    transport = jump.get_transport()
    if transport is None:
        raise GuestError("the SSH connection to the libvirt host closed at once")
    return transport.open_channel("direct-tcpip", (target.host, target.port), ("127.0.0.1", 0),
                                  timeout=timeout_s)


def _load_client_key(path: Path) -> paramiko.Ed25519Key:
    try:
        return paramiko.Ed25519Key.from_private_key_file(str(path))
    except FileNotFoundError:
        raise GuestError(
            f"the workspace's SSH key {path} is missing",
            hint="the workspace's files were removed or damaged: destroy it and create it again",
        ) from None
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise GuestError(
            f"cannot load the workspace's SSH key {path}: {exc}",
            hint="the workspace's files were removed or damaged: destroy it and create it again",
        ) from None


def _pinned_key(target: SshTarget) -> tuple[str, paramiko.PKey]:
    fields = target.host_key.split()
    try:
        key_type, blob = fields[0], base64.b64decode(fields[1], validate=True)
        return key_type, paramiko.PKey.from_type_string(key_type, blob)
    except (IndexError, binascii.Error, paramiko.SSHException, ValueError) as exc:
        raise GuestError(
            f"the pinned host key for {target.host}:{target.port} is not a valid SSH public key"
            f" ({exc.__class__.__name__})",
            hint="the workspace's files were damaged: destroy it and create it again",
        ) from None


def _translate(exc: BaseException, *, target: SshTarget) -> _Failure:
    """The one place that maps paramiko and socket errors to agentbox errors."""
    where = f"{target.host}:{target.port}"
    if isinstance(exc, paramiko.BadHostKeyException):
        offered = getattr(exc.key, "fingerprint", "?")
        pinned = getattr(exc.expected_key, "fingerprint", "?")
        return _Failure(
            HostKeyMismatch(
                f"host key for {where} does not match the pinned key: refusing to connect"
                f" (offered {offered}, pinned {pinned})",
                hint="the guest may have been re-created or tampered with; do not trust it:"
                " remove it with `agentbox destroy` and create a new workspace",
            ),
            _Retry.NEVER,
        )
    if isinstance(exc, paramiko.PasswordRequiredException):
        return _Failure(
            GuestError(f"the workspace's SSH key {target.private_key} is encrypted"), _Retry.NEVER
        )
    if isinstance(exc, paramiko.AuthenticationException):
        return _Failure(
            GuestError(
                f"the guest at {where} refused the workspace's SSH key for user {target.user!r}",
                hint="cloud-init may have failed to install the key: look at the guest's console log,"
                " or destroy the workspace and create it again",
            ),
            _Retry.LIMITED,
        )
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return _Failure(GuestError(f"SSH to {where} timed out"), _Retry.UNTIL_TIMEOUT)
    if isinstance(exc, (paramiko.ssh_exception.NoValidConnectionsError, ConnectionRefusedError)):
        return _Failure(GuestError(f"nothing accepts SSH connections on {where}"), _Retry.UNTIL_TIMEOUT)
    if isinstance(exc, (ConnectionError, EOFError)):
        # QEMU's hostfwd accepts and then drops the connection while the guest's sshd is down.
        return _Failure(
            GuestError(f"the SSH connection to {where} was closed or reset"), _Retry.UNTIL_TIMEOUT
        )
    if isinstance(exc, paramiko.SSHException):
        return _Failure(GuestError(f"SSH to {where} failed: {exc}"), _Retry.UNTIL_TIMEOUT)
    if isinstance(exc, OSError):
        return _Failure(GuestError(f"cannot connect to {where}: {exc.strerror or exc}"), _Retry.UNTIL_TIMEOUT)
    return _Failure(GuestError(f"SSH to {where} failed: {exc.__class__.__name__}: {exc}"), _Retry.NEVER)
