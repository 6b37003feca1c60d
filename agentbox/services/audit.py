"""The workspace's append-only audit log: JSONL, each record chained to the previous one.

Each line carries `prev`, the SHA-256 of the previous line's bytes, so an edit, deletion
or reordering breaks the chain. Appends take an exclusive lock so concurrent writers
never interleave.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def utc_now() -> datetime:
    return datetime.now(UTC)


class AuditLog:
    def __init__(self, *, path: Path, clock: Callable[[], datetime] = utc_now) -> None:
        self._path = path
        self._clock = clock

    def append(self, *, event: str, details: Mapping[str, Any] | None = None) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            prev = _hash_of_last_line(fd)
            entry = {"ts": self._clock().isoformat(timespec="milliseconds"), "event": event,
                     "details": dict(details or {}), "prev": prev}
            os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode())
        finally:
            os.close(fd)


def _hash_of_last_line(fd: int) -> str:
    size = os.lseek(fd, 0, os.SEEK_END)
    if size == 0:
        return GENESIS
    chunk = 4096
    data = b""
    pos = size
    while pos > 0:
        step = min(chunk, pos)
        pos -= step
        data = os.pread(fd, step, pos) + data
        if data.rstrip(b"\n").count(b"\n") >= 1:
            break
    last = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return hashlib.sha256(last).hexdigest()
