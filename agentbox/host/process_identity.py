"""Which process is which: a PID together with its start time (PIDs get reused, start
times of one PID never repeat), so a stale record can never be taken for a live helper
of another workspace. Also how agentbox starts its helper processes."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from agentbox.errors import AgentboxError

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    start: int  # clock ticks since boot (/proc/PID/stat field 22)

    def to_json(self) -> dict[str, int]:
        return {"pid": self.pid, "start": self.start}

    @classmethod
    def from_json(cls, data: object) -> ProcessIdentity | None:
        if not isinstance(data, dict):
            return None
        pid, start = data.get("pid"), data.get("start")
        if not isinstance(pid, int) or not isinstance(start, int) or pid <= 0:
            return None
        return cls(pid=pid, start=start)


def identity_of(pid: int) -> ProcessIdentity | None:
    """The identity of a live, non-zombie `pid`; None if there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return ProcessIdentity(pid=pid, start=int(fields[19]))


def cpu_seconds_of(identity: ProcessIdentity) -> float | None:
    """User plus system CPU time of that very process (not a reused PID); None if gone."""
    try:
        fields = Path(f"/proc/{identity.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if int(fields[19]) != identity.start:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def current_identity() -> ProcessIdentity:
    identity = identity_of(os.getpid())
    assert identity is not None  # this process is alive
    return identity


def is_alive(identity: ProcessIdentity | None) -> bool:
    return identity is not None and identity_of(identity.pid) == identity


def terminate(identity: ProcessIdentity, *, timeout_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `timeout_s`; only while it is still that very process."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not is_alive(identity):
            return
        try:
            os.kill(identity.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            _reap(identity.pid)
            if not is_alive(identity):
                return
            time.sleep(0.02)


def python_module_argv(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def spawn_detached(*, argv: Sequence[str], log_file: Path, env: Mapping[str, str] | None = None) -> ProcessIdentity:
    """Start `argv` in its own session (Ctrl-C in the caller's terminal and the caller's
    death spare it), output appended to `log_file`."""
    child = _popen(argv=argv, log_file=log_file, env=env, new_session=True, die_with_parent=False)
    return _identity_of_child(child)


def spawn_child(*, argv: Sequence[str], log_file: Path,
                env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a helper that must not outlive this process: the kernel kills it when its
    parent dies, even by SIGKILL, so a dead supervisor never leaves egress open."""
    return _popen(argv=argv, log_file=log_file, env=env, new_session=False, die_with_parent=True)


def spawn_child_reading_stderr(*, argv: Sequence[str], env: Mapping[str, str] | None = None
                               ) -> subprocess.Popen[bytes]:
    """Like spawn_child, but its stderr is a pipe its parent reads (stdout is discarded)."""
    return _popen(argv=argv, log_file=None, env=env, new_session=False, die_with_parent=True)


def _popen(*, argv: Sequence[str], log_file: Path | None, env: Mapping[str, str] | None, new_session: bool,
           die_with_parent: bool) -> subprocess.Popen[bytes]:
    parent = os.getpid()

    def in_child() -> None:
        if die_with_parent and sys.platform == "linux":
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl: do not run orphaned
                os._exit(1)

    with contextlib.ExitStack() as stack:
        log: int | IO[bytes] = stack.enter_context(log_file.open("ab")) if log_file else subprocess.DEVNULL
        try:
            return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=log if log_file else subprocess.PIPE,
                                    env=dict(env) if env is not None else None, start_new_session=new_session,
                                    close_fds=True, preexec_fn=in_child if die_with_parent else None)
        except OSError as exc:
            raise AgentboxError(f"could not start {argv[0]}: {exc.strerror}") from None


def _identity_of_child(child: subprocess.Popen[bytes]) -> ProcessIdentity:
    identity = identity_of(child.pid)
    if identity is None:  # it died at once; an identity that can match nothing
        return ProcessIdentity(pid=child.pid, start=-1)
    return identity


def _reap(pid: int) -> None:
    # Our own child would stay a zombie until reaped.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
