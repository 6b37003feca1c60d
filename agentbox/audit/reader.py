"""Reading an audit log: iterate its records, filter by time, follow it as it grows.

Readers never hold the lock while they work: they take it shared just long enough to note
the file's size. Writers hold it exclusively for a whole append, so that size is always at
a record boundary, and bytes before it never change in an append-only file.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from agentbox.audit.record import AuditRecord, BadRecord, parse_record
from agentbox.errors import Cancelled, NotFound
from agentbox.model.progress import CancelToken

_CHUNK = 1 << 16


@dataclass(frozen=True)
class Line:
    number: int  # 1-based
    offset: int  # byte offset of the line's first byte
    data: bytes  # without the newline
    terminated: bool  # False only for a last line cut short (see chain.py)


def settled_size(fd: int) -> int:
    """The file's size while no append is in progress."""
    fcntl.flock(fd, fcntl.LOCK_SH)
    try:
        return os.fstat(fd).st_size
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def open_log(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"no audit log at {path}", hint="a workspace's log starts when it is created") from None


def scan_lines(fd: int, *, start: int = 0, end: int) -> Iterator[Line]:
    """The lines in bytes [start, end), numbered from 1 at `start`; the last may be unterminated."""
    pos, number, pending = start, 1, b""
    while pos < end:
        block = os.pread(fd, min(_CHUNK, end - pos), pos)
        if not block:
            break  # shrank under us: only a purge does that; stop quietly
        pos += len(block)
        pending += block
        *complete, pending = pending.split(b"\n")
        line_start = pos - len(pending) - sum(len(c) + 1 for c in complete)
        for data in complete:
            yield Line(number=number, offset=line_start, data=data, terminated=True)
            line_start += len(data) + 1
            number += 1
    if pending:
        yield Line(number=number, offset=pos - len(pending), data=pending, terminated=False)


def _aware(since: datetime | None) -> datetime | None:
    if since is None:
        return None
    return since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)


def read_records(*, path: Path, since: datetime | None = None) -> Iterator[AuditRecord]:
    """Well-formed records in file order (`since`: at or after it; naive means UTC).

    Lines that are not records are skipped here; `verify_chain` is what reports them.
    """
    since = _aware(since)
    fd = open_log(path)
    try:
        for line in scan_lines(fd, end=settled_size(fd)):
            record = _record_or_none(line)
            if record is not None and (since is None or record.ts >= since):
                yield record
    finally:
        os.close(fd)


def follow_records(*, path: Path, cancel: CancelToken, since: datetime | None = None, poll_s: float = 0.5,
                   stop: Callable[[], bool] | None = None) -> Iterator[AuditRecord]:
    """Yield the records already there, then new ones as they are appended.

    Polls every `poll_s` seconds; returns when `cancel` is set or `stop()` is true (both
    checked between polls). Waits for a missing file to appear, and starts over when the
    file is replaced (a purge followed by a new create of the same name).
    """
    since = _aware(since)
    inode, pos = None, 0
    while True:
        records, inode, pos = _read_new(path=path, inode=inode, pos=pos)
        for record in records:
            if since is None or record.ts >= since:
                yield record
        if cancel.cancelled or (stop is not None and stop()):
            return
        try:
            cancel.wait(poll_s)
        except Cancelled:
            return


def _read_new(*, path: Path, inode: int | None, pos: int) -> tuple[list[AuditRecord], int | None, int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return [], None, 0
    try:
        stat = os.fstat(fd)
        if stat.st_ino != inode or stat.st_size < pos:
            pos = 0  # a different file now: read it from the start
        records = []
        end = settled_size(fd)
        for line in scan_lines(fd, start=pos, end=end):
            if not line.terminated:
                break  # torn: the next append terminates it; re-read from here then
            record = _record_or_none(line)
            if record is not None:
                records.append(record)
            pos = line.offset + len(line.data) + 1
        return records, stat.st_ino, pos
    finally:
        os.close(fd)


def _record_or_none(line: Line) -> AuditRecord | None:
    if not line.terminated:
        return None
    try:
        return parse_record(line.data)
    except BadRecord:
        return None
