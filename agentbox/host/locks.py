"""One operation per workspace at a time, across processes.

The lock is an flock, released by the kernel when its holder dies. Its holder also writes
its identity into the lock file, so others can tell whether the workspace is busy by
reading that file: taking the lock to look would make a command that starts at that
moment fail with Busy."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agentbox.config.paths import AppPaths
from agentbox.errors import Busy
from agentbox.host.process_identity import ProcessIdentity, current_identity, is_alive

LOCK_POLL_S = 0.1


@contextmanager
def held_lock(*, path: Path, busy: Busy, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the flock on `path` (waiting up to `wait_s`) or raise `busy`; the file names the
    holder while it is held."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise busy from None
                time.sleep(LOCK_POLL_S)
        os.ftruncate(fd, 0)
        try:
            os.pwrite(fd, json.dumps(current_identity().to_json()).encode() + b"\n", 0)
        except OSError as exc:  # a full data dir: say which file
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # before the unlock: a reader never sees a released lock as held
    finally:
        os.close(fd)


def holder(*, path: Path) -> ProcessIdentity | None:
    """The live process holding the lock at `path`, read without touching the lock."""
    try:
        data = json.loads(path.read_bytes() or b"null")
    except (OSError, ValueError):
        return None
    identity = ProcessIdentity.from_json(data)
    return identity if is_alive(identity) else None


def lock_path(*, paths: AppPaths, name: str) -> Path:
    return paths.locks_dir / f"{name}.lock"


@contextmanager
def workspace_lock(*, paths: AppPaths, name: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the workspace's lock or raise Busy (at once, or after `wait_s`)."""
    busy = Busy(f"workspace {name!r} is busy: another agentbox command is working on it",
                hint="wait for it to finish, then try again")
    with held_lock(path=lock_path(paths=paths, name=name), busy=busy, wait_s=wait_s):
        yield


def is_locked(*, paths: AppPaths, name: str) -> bool:
    """True while some live process holds the workspace's lock (e.g. a create in progress)."""
    return holder(path=lock_path(paths=paths, name=name)) is not None
