"""Reading an audit log: iterate its records (all segments, oldest first), filter by time,
follow it as it grows, or take just the newest few from the end."""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime
from pathlib import Path

from agentbox.audit.lines import Cursor, last_lines, lines_after
from agentbox.audit.record import AuditRecord, BadRecord, parse_record
from agentbox.audit.segments import inode_of, log_files
from agentbox.errors import Cancelled, NotFound
from agentbox.model.progress import CancelToken


def open_log(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise _missing(path) from None


def _missing(path: Path) -> NotFound:
    return NotFound(f"no audit log at {path}", hint="a workspace's log starts when it is created")


def _aware(since: datetime | None) -> datetime | None:
    if since is None:
        return None
    return since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)


def read_records(*, path: Path, since: datetime | None = None) -> Iterator[AuditRecord]:
    """Well-formed records in log order (`since`: at or after it; naive means UTC).

    Lines that are not records are skipped here; `verify_chain` is what reports them.
    """
    since = _aware(since)
    if not log_files(path):
        raise _missing(path)
    cursor = Cursor()
    while True:
        for data in lines_after(path=path, cursor=cursor):
            record = _record_or_none(data)
            if record is not None and (since is None or record.ts >= since):
                yield record
        # Rotated while we read: the old file was read through; the new one is still to come.
        if inode_of(path) in (None, cursor.inode):
            return


def follow_records(*, path: Path, cancel: CancelToken, since: datetime | None = None, poll_s: float = 0.5,
                   stop: Callable[[], bool] | None = None) -> Iterator[AuditRecord]:
    """Yield the records already there, then new ones as they are appended.

    Polls every `poll_s` seconds; returns when `cancel` is set or `stop()` is true (both
    checked between polls). Waits for a missing file to appear, follows it through a
    rotation, and starts over when the log is replaced (a purge, then a new create).
    """
    since = _aware(since)
    cursor = Cursor()
    while True:
        for data in lines_after(path=path, cursor=cursor):
            record = _record_or_none(data)
            if record is not None and (since is None or record.ts >= since):
                yield record
        if cancel.cancelled or (stop is not None and stop()):
            return
        try:
            cancel.wait(poll_s)
        except Cancelled:
            return


def tail_records(*, path: Path, count: int, skip_events: Collection[str] = ()) -> tuple[AuditRecord, ...]:
    """The newest `count` well-formed records whose event is not in `skip_events`, oldest
    first, read backward from the end: the cost follows what it has to pass over, not the
    log's size."""
    return RecentRecords(path=path, count=count, skip_events=skip_events).get()


class RecentRecords:
    """The newest `count` records of a log (but `skip_events`), kept up to date cheaply: found
    once by reading backward from the end, then each `get` reads only what was appended
    since (through rotations). For a view refreshed every few seconds: when the events it
    wants are far behind a flood of skipped ones, only the first look pays for reaching them."""

    def __init__(self, *, path: Path, count: int, skip_events: Collection[str] = ()) -> None:
        self._path, self._skip = path, frozenset(skip_events)
        # A line as the appender writes it (sorted keys) has its event right before its last
        # "prev": lines of a skipped event are passed over without parsing.
        self._markers = tuple(b'"event": ' + json.dumps(event).encode() for event in sorted(self._skip))
        self._records: deque[AuditRecord] = deque(maxlen=count)
        self._cursor: Cursor | None = None
        self._lock = threading.Lock()

    def get(self) -> tuple[AuditRecord, ...]:
        with self._lock:
            files = log_files(self._path)
            if not files:
                self._cursor = None
                raise _missing(self._path)
            cursor = self._cursor
            if cursor is None or cursor.inode not in [inode_of(file) for file in files]:  # new, or replaced
                cursor = Cursor()
                self._records.clear()
                self._records.extend(last_lines(path=self._path, count=self._records.maxlen or 0,
                                                parse=self._parse, cursor=cursor))
                self._cursor = cursor
            else:
                for data in lines_after(path=self._path, cursor=cursor):
                    record = self._parse(data)
                    if record is not None:
                        self._records.append(record)
            return tuple(self._records)

    def _parse(self, data: bytes) -> AuditRecord | None:
        if self._markers and data.endswith(self._markers, 0, max(data.rfind(_PREV), 0)):
            return None
        record = _record_or_none(data)
        return record if record is not None and record.event not in self._skip else None


_PREV = b', "prev": "'


def _record_or_none(data: bytes) -> AuditRecord | None:
    try:
        return parse_record(data)
    except BadRecord:
        return None
