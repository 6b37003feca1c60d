"""The real CLI on a Fake-backend world kept in files, so that several agentbox processes share
it and one killed outright leaves it exactly as it was at that moment: the Fake's domains (with
their snapshots and live devices) in WORK/backend.pickle, the egress stand-in's running
workspaces in WORK/egress.json, everything else where agentbox itself keeps it (records, keys,
disks, locks, real read-only bind mounts).

`run_cli(work, argv)` runs `main(argv)` in a forked child (the interpreter is loaded already, so
a run costs milliseconds, not an interpreter start) and returns its exit code, output and the
steps it went through: every progress line, backend change, egress change, guest command and
host mount, in order. `pause_at(work, K, ...)` stops the child (SIGSTOP) at its K-th step, the
workspace lock and all, to be killed there (`kill_at`) or let go on."""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import signal
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentbox import bootstrap
from agentbox.backends.fake import FakeBackend
from agentbox.cli.progress import ProgressPrinter
from agentbox.entry import main
from agentbox.host import bind_mounts
from agentbox.model.progress import Progress
from agentbox.stores.records import WorkspaceFiles, WorkspaceRecord
from tests.cli.fake_run import fake_context
from tests.services.conftest import RecordingEgress, ScriptedGuest

BUG_EXIT = 70  # the child died of an exception main() let through: a traceback on stderr
_CHANGES = ("define", "start", "shutdown", "destroy", "undefine", "create_snapshot", "revert_snapshot",
            "delete_snapshot", "attach_filesystem", "detach_filesystem", "attach_disk", "detach_disk",
            "create_overlay", "delete_volume")
_READS = ("get", "list_domains", "list_snapshots", "attached")


class Steps:
    """Counts the side effects of one process; at the `stop_at`-th it stops (SIGSTOP)."""

    def __init__(self, *, log: Path, stop_at: int | None) -> None:
        self._log, self._stop_at, self._count = log, stop_at, 0

    def reached(self, what: str) -> None:
        self._count += 1
        with self._log.open("a") as log:
            log.write(what + "\n")
        if self._count == self._stop_at:
            os.kill(os.getpid(), signal.SIGSTOP)  # until the test kills it, or lets it go on


@contextmanager
def _flocked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


class StoredFake(FakeBackend):
    """The Fake, its domains loaded from a file before every call and saved after every change."""

    def __init__(self, *, owner: str, state: Path, steps: Steps) -> None:
        super().__init__(owner=owner)
        self._state, self._steps = state, steps

    def _call(self, method: str, kwargs: dict[str, Any]) -> Any:
        if method in _CHANGES:
            self._steps.reached(f"backend {method}")
        with _flocked(self._state.with_suffix(".lock")):
            if self._state.exists():
                self._domains = pickle.loads(self._state.read_bytes())
            result = getattr(FakeBackend, method)(self, **kwargs)
            if method in _CHANGES:
                temporary = self._state.with_suffix(".tmp")
                temporary.write_bytes(pickle.dumps(self._domains))
                os.replace(temporary, self._state)
            return result


def _stored(method: str) -> Callable[..., Any]:
    def call(self: StoredFake, **kwargs: Any) -> Any:
        return self._call(method, kwargs)
    return call


for _method in _CHANGES + _READS:
    setattr(StoredFake, _method, _stored(_method))


class StoredEgress(RecordingEgress):
    """The egress stand-in, its running workspaces kept in a file."""

    def __init__(self, *, state: Path, steps: Steps) -> None:
        super().__init__()
        self._state, self._steps = state, steps
        self.running = set(json.loads(state.read_text())) if state.exists() else set()

    def ensure_running(self, *, record: WorkspaceRecord, files: WorkspaceFiles) -> None:
        self._steps.reached("egress up")
        super().ensure_running(record=record, files=files)
        self._save()

    def stop(self, *, files: WorkspaceFiles, forward_only: bool = False) -> None:
        self._steps.reached("egress forward down" if forward_only else "egress down")
        super().stop(files=files, forward_only=forward_only)
        self._save()

    def hold_through_power_cycle(self, *, files: WorkspaceFiles, forward_down: bool = False) -> None:
        self._steps.reached("egress hold")
        super().hold_through_power_cycle(files=files, forward_down=forward_down)

    def _save(self) -> None:
        self._state.write_text(json.dumps(sorted(self.running)))


def running_egress(work: Path) -> list[str]:
    """The workspaces whose (stand-in) egress helpers run."""
    state = work / "egress.json"
    return json.loads(state.read_text()) if state.exists() else []


def stored_domains(work: Path) -> list[str]:
    state = work / "backend.pickle"
    return sorted(pickle.loads(state.read_bytes())) if state.exists() else []


def _pausing(steps: Steps) -> None:
    """Make host mounts and progress lines steps too (in the child only: it is thrown away)."""
    for name in ("mount_readonly_bind", "make_copy_disk"):
        original = getattr(bind_mounts, name)

        def wrapper(*args: Any, __original: Callable[..., Any] = original, __name: str = name,
                    **kwargs: Any) -> Any:
            steps.reached(f"host {__name}")
            return __original(*args, **kwargs)
        setattr(bind_mounts, name, wrapper)
    printed = ProgressPrinter.__call__

    def announce(self: ProgressPrinter, progress: Progress) -> None:
        printed(self, progress)
        if progress.fraction is None:
            steps.reached(f"progress {progress.step}")
    ProgressPrinter.__call__ = announce  # type: ignore[method-assign]


def _child(work: Path, argv: Sequence[str], steps: Steps) -> int:
    _pausing(steps)

    def guest_step(argv: Sequence[str], _: Callable[[bytes], None]) -> int | None:
        steps.reached(f"guest {' '.join(argv[:3])}")
        return None  # then the scripted guest's own answer

    ctx = fake_context(work, backend=StoredFake(owner="test-owner", state=work / "backend.pickle", steps=steps),
                       guest=ScriptedGuest(reply=guest_step, on_wait=lambda: steps.reached("guest ssh wait")),
                       egress=StoredEgress(state=work / "egress.json", steps=steps))
    services = bootstrap.build_services(ctx=ctx)
    bootstrap.build_services = lambda **_: services  # what the CLI's commands call
    # ... and what `audit` and `receipts` call: the same data dir, not the default one
    history = bootstrap.build_history(paths=ctx.paths)
    bootstrap.build_history = lambda **_: history
    return main(list(argv))


@dataclass(frozen=True)
class CliRun:
    code: int  # -9 when killed
    out: str
    err: str
    steps: tuple[str, ...]


def _start(work: Path, argv: Sequence[str], stop_at: int | None) -> tuple[int, Path]:
    work.mkdir(parents=True, exist_ok=True)
    base = work / f"run-{uuid.uuid4().hex[:8]}"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the test
        code = BUG_EXIT
        try:
            for fd, suffix in ((1, ".out"), (2, ".err")):
                os.dup2(os.open(base.with_suffix(suffix), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
            sys.stdout = open(1, "w", buffering=1, closefd=False)
            sys.stderr = open(2, "w", buffering=1, closefd=False)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            code = _child(work, argv, Steps(log=base.with_suffix(".steps"), stop_at=stop_at))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - reported as a bug: the traceback is the evidence
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid, base


def _result(code: int, base: Path) -> CliRun:
    def read(suffix: str) -> str:
        path = base.with_suffix(suffix)
        return path.read_text() if path.exists() else ""
    return CliRun(code=code, out=read(".out"), err=read(".err"), steps=tuple(read(".steps").splitlines()))


def _wait(pid: int, *, timeout_s: float) -> int | None:
    """The child's exit code once it ends, or None once it has stopped itself at its step."""
    deadline = time.monotonic() + timeout_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG | os.WUNTRACED)
        if done and os.WIFSTOPPED(status):
            return None
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"the agentbox process did not end or stop within {timeout_s:.0f} s")
        time.sleep(0.002)


def run_cli(work: Path, *argv: str, timeout_s: float = 60.0) -> CliRun:
    """Run the command to its end."""
    pid, base = _start(work, argv, None)
    code = _wait(pid, timeout_s=timeout_s)
    assert code is not None
    return _result(code, base)


@dataclass(frozen=True)
class Paused:
    """A command stopped at one of its steps, the workspace lock and all."""

    pid: int
    base: Path

    @property
    def at(self) -> str:
        return _result(0, self.base).steps[-1]

    def kill(self) -> CliRun:
        os.kill(self.pid, signal.SIGKILL)
        _, status = os.waitpid(self.pid, 0)
        return _result(os.waitstatus_to_exitcode(status), self.base)

    def resume(self, *, timeout_s: float = 60.0) -> CliRun:
        os.kill(self.pid, signal.SIGCONT)
        code = _wait(self.pid, timeout_s=timeout_s)
        assert code is not None, "it stops only once"
        return _result(code, self.base)


def pause_at(work: Path, step: int, *argv: str, timeout_s: float = 60.0) -> Paused:
    """Run the command until it reaches its `step`-th step."""
    pid, base = _start(work, argv, step)
    code = _wait(pid, timeout_s=timeout_s)
    if code is not None:
        ended = _result(code, base)
        raise AssertionError(f"agentbox {' '.join(argv)} ended (code {code}) before its step {step}: "
                             f"{ended.steps} {ended.err}")
    return Paused(pid=pid, base=base)


def kill_at(work: Path, step: int, *argv: str) -> CliRun:
    """SIGKILL the command as it reaches its `step`-th step (its code is then -9)."""
    return pause_at(work, step, *argv).kill()
