"""The processes the QEMU backend runs: QEMU itself (a daemon of its own, `-daemonize`)
and one virtiofsd per shared folder. Each is known by its identity (PID + start time,
host/process_identity.py) written beside it, never by a PID alone."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from agentbox.config.atomic_file import write_atomically
from agentbox.errors import BackendError, ToolFailed
from agentbox.host.process_identity import (
    ProcessIdentity,
    cpu_seconds_of,
    identity_of,
    is_alive,
    spawn_detached,
    terminate,
)

START_TIMEOUT_S = 120.0
SOCKET_WAIT_S = 10.0


def launch_qemu(*, argv: Sequence[str], pidfile: Path, identity_file: Path, what: str) -> ProcessIdentity:
    """Run QEMU with `-daemonize`: it returns once the machine is set up (or failed, with
    QEMU's own message), leaving the daemon running."""
    pidfile.unlink(missing_ok=True)
    try:
        subprocess.run(list(argv), check=True, capture_output=True, text=True, timeout=START_TIMEOUT_S,
                       stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise ToolFailed(f"{argv[0]} is not installed",
                         hint="install qemu-system-x86 (Debian) or qemu (Homebrew)") from None
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or "").strip() or f"exit status {exc.returncode}"
        raise BackendError(f"{what}: QEMU did not start: {detail}") from None
    except subprocess.TimeoutExpired:
        raise BackendError(f"{what}: QEMU did not finish starting within {START_TIMEOUT_S:.0f} s") from None
    identity = _identity_from_pidfile(pidfile)
    if identity is None:
        raise BackendError(f"{what}: QEMU reported success but is not running (no live pid in {pidfile})")
    write_identity(identity_file, identity)
    return identity


def write_identity(path: Path, identity: ProcessIdentity, **extra: str) -> None:
    write_atomically(path=path, data=json.dumps({**identity.to_json(), **extra}).encode())


def read_identity(path: Path) -> ProcessIdentity | None:
    try:
        return ProcessIdentity.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def read_extra(path: Path, key: str) -> str:
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get(key, "")
    except (OSError, ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


def live(path: Path) -> ProcessIdentity | None:
    """The process recorded at `path` if it is still that very process."""
    identity = read_identity(path)
    return identity if is_alive(identity) else None


def wait_gone(identity: ProcessIdentity, *, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while is_alive(identity):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stop(identity: ProcessIdentity, *, timeout_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL: only while it is still that process."""
    terminate(identity, timeout_s=timeout_s)


def start_virtiofsd(*, virtiofsd: str, source: Path, socket: Path, readonly: bool, log_file: Path) -> ProcessIdentity:
    """One virtiofsd serving `source` on `socket`; it exits by itself when QEMU lets go."""
    socket.unlink(missing_ok=True)
    argv = [virtiofsd, "-f", f"--socket-path={socket}", "-o", f"source={source}", "-o", "no_xattr"]
    if readonly:
        argv.append("--readonly")  # only virtiofsd builds that know it; the caller checked
    identity = spawn_detached(argv=argv, log_file=log_file)
    deadline = time.monotonic() + SOCKET_WAIT_S
    while not socket.exists():
        if not is_alive(identity) or time.monotonic() > deadline:
            stop(identity)
            tail = _tail(log_file)
            raise BackendError(f"virtiofsd did not come up for {source}" + (f": {tail}" if tail else ""))
        time.sleep(0.05)
    return identity


def _identity_from_pidfile(pidfile: Path) -> ProcessIdentity | None:
    try:
        pid = int(pidfile.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    return identity_of(pid)


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def cpu_seconds(identity: ProcessIdentity) -> float | None:
    """The QEMU process's CPU time; None once it is gone."""
    return cpu_seconds_of(identity)
