"""One operation per workspace at a time, across processes."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from agentbox.config.paths import AppPaths
from agentbox.errors import Busy


@contextmanager
def workspace_lock(*, paths: AppPaths, name: str) -> Iterator[None]:
    """Hold the workspace's lock or raise Busy at once; released on exit or process death."""
    paths.locks_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(paths.locks_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(
                f"workspace {name!r} is busy: another agentbox command is working on it",
                hint="wait for it to finish, then try again",
            ) from None
        yield
    finally:
        os.close(fd)


def is_locked(*, paths: AppPaths, name: str) -> bool:
    """True while some process holds the workspace's lock (e.g. a create in progress)."""
    path = paths.locks_dir / f"{name}.lock"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
