"""Helper processes agentbox starts detached (egress proxy, forward, session timer) and
finds again by PID file: alive only if the PID's command line is still the one we started,
because PIDs get reused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from agentbox.errors import AgentboxError


def python_module_argv(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def spawn_detached(*, argv: Sequence[str], log_file: Path, env: Mapping[str, str] | None = None) -> int:
    """Start `argv` in its own session (Ctrl-C in the caller's terminal spares it), stderr
    appended to `log_file`; returns its PID."""
    with log_file.open("ab") as log:
        try:
            child = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     env=dict(env) if env is not None else None, start_new_session=True,
                                     close_fds=True)
        except OSError as exc:
            raise AgentboxError(f"could not start {argv[0]}: {exc.strerror}") from None
    return child.pid


def is_ours(*, pid: int, marker: str) -> bool:
    """True if `pid` runs and its command line contains `marker` (e.g. the module name)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and marker.encode() in cmdline


def running_pid(*, pid_file: Path, marker: str) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if is_ours(pid=pid, marker=marker) else None


def terminate(*, pid: int, marker: str, timeout_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `timeout_s`; only if it is still the process we started."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not is_ours(pid=pid, marker=marker):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not is_ours(pid=pid, marker=marker):
                _reap(pid)
                return
            time.sleep(0.05)


def _reap(pid: int) -> None:
    # Our own child (started by this process) would stay a zombie until reaped.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
