"""Appending to a workspace's audit log: one JSONL file, each record chained to the last.

Concurrency: every append opens the file, takes an exclusive flock on it, reads the tail
*under the lock*, writes its whole line(s) with one O_APPEND write, fsyncs, and closes
(which releases the lock). So writers in any number of processes (CLI, TUI, the egress
proxy daemon) never interleave, and each chains onto the record truly before it.

A damaged tail (a crash, kill or full disk mid-write leaves a last line without its
newline; or the last line is not a valid record) is never chained onto as if it were a
record, and never dropped: the next append first terminates it with a newline if needed,
then writes an `audit.torn_tail` record whose `prev` is the hash of the damaged bytes and
whose details give their offset, length and the reason; its `seq` follows the last valid
record. The new event then chains onto that record. `verify_chain` reports each such
recovery (it is visible forever) and checks the rest of the chain as usual. This gives an
attacker nothing new: cutting the file mid-line and letting the next append "recover" it
hides no more than cutting it at a line boundary, which no chain inside the file can
detect: `head()` is what anchors.py keeps elsewhere to catch that.

Rotation: an append that finds the active file at `rotate_bytes` or more writes its record
into a new file instead, whose first `prev` is the old file's last hash, and swaps it in
(the old file is hard-linked as the next segment, then the new one renamed over the
active name, so the name never goes missing). A writer that was waiting for the lock of the
file rotated away sees, once it has the lock, that the name no longer points there, and
starts over on the new file. A log made with `keep` (the decision trail, see trail.py) then
drops all but its newest `keep` segments, so it stays bounded; its chain then starts at the
oldest segment kept, which `verify_chain(kept_segments=...)` accepts only while that many
segments are there.

`durable=False` leaves out the fsync of each append (the decision trail: many a second);
what was written survives the writer's crash, and `synced_head` fsyncs before anyone notes
the head elsewhere.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from agentbox.audit.record import (
    GENESIS,
    TORN_TAIL_EVENT,
    AuditRecord,
    BadRecord,
    encode_record,
    line_digest,
    parse_record,
    utc_now,
)
from agentbox.audit.segments import inode_of, next_segment, segment_paths, staging_path
from agentbox.errors import AgentboxError, InvalidInput
from agentbox.model.audit_head import AuditHead

_CHUNK = 4096
ROTATE_BYTES = 8 << 20  # a segment holds ~25,000 records; readers of the newest ones never read more


@dataclass(frozen=True)
class _Damage:
    offset: int
    length: int
    digest: str
    reason: str
    terminated: bool


@dataclass(frozen=True)
class _Tail:
    prev: str  # what the next record chains onto
    seq: int  # seq of the last valid record (0: none)
    damage: _Damage | None


class AuditLog:
    """A workspace's audit log. `clock` must return timezone-aware datetimes."""

    def __init__(self, *, path: Path, clock: Callable[[], datetime] = utc_now,
                 rotate_bytes: int = ROTATE_BYTES, keep: int | None = None, durable: bool = True) -> None:
        self._path = path
        self._clock = clock
        self._rotate_bytes = rotate_bytes
        self._keep = keep  # segments kept after a rotation (None: all of them)
        self._durable = durable

    @property
    def path(self) -> Path:
        return self._path

    @property
    def clock(self) -> Callable[[], datetime]:
        return self._clock

    def head(self) -> AuditHead | None:
        """The last valid record's seq and hash, read under the lock; None: no record yet."""
        try:
            fd = self._open_locked(write=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AgentboxError(f"cannot read the audit log {self._path}: {exc.strerror or exc}") from None
        try:
            size = os.fstat(fd).st_size
            if size:
                return _head_of(fd, size)
            segments = segment_paths(self._path)
            if not segments:
                return None
            old = os.open(segments[-1], os.O_RDONLY | os.O_CLOEXEC)
            try:
                return _head_of(old, os.fstat(old).st_size)
            finally:
                os.close(old)
        finally:
            os.close(fd)

    def synced_head(self) -> AuditHead | None:
        """`head()`, once what was appended is on disk: for noting it elsewhere (an anchor)."""
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return self.head()
        except OSError as exc:
            raise AgentboxError(f"cannot read the log {self._path}: {exc.strerror or exc}") from None
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return self.head()

    def append(self, *, event: str, details: Mapping[str, Any] | None = None) -> AuditRecord:
        """Append one record (durably, unless made with durable=False: fsync'd before returning) and return it."""
        if not isinstance(event, str) or not event.strip():
            raise InvalidInput(f"audit event {event!r} is not a non-empty string")
        try:
            fd = self._open_locked()
        except OSError as exc:
            raise _write_error(self._path, exc) from None
        try:
            size = os.fstat(fd).st_size
            tail = _read_tail(fd, size) if size else self._segment_tail()
            now = self._clock()
            out, prev, seq = bytearray(), tail.prev, tail.seq
            if tail.damage is not None:
                damage = tail.damage
                if not damage.terminated:
                    out += b"\n"
                line = encode_record(seq=seq + 1, ts=now, event=TORN_TAIL_EVENT, prev=damage.digest, details={
                    "offset": damage.offset, "length": damage.length, "reason": damage.reason})
                out += line + b"\n"
                prev, seq = line_digest(line), seq + 1
            line = encode_record(seq=seq + 1, ts=now, event=event, details=details or {}, prev=prev)
            out += line + b"\n"
            if tail.damage is None and size >= self._rotate_bytes:
                self._rotate(fd, bytes(out))
            else:
                try:
                    _write_all(fd, bytes(out))
                except OSError:
                    self._undo_write(fd, size)
                    raise
                if self._durable:
                    os.fsync(fd)
                if size == 0 and self._durable:
                    _fsync_dir(self._path.parent)  # a new file's name must survive a crash too
        except OSError as exc:
            raise _write_error(self._path, exc) from None
        finally:
            os.close(fd)  # releases the lock
        return parse_record(line)

    def _undo_write(self, fd: int, size: int) -> None:
        """With the lock: drop what a failed write (a full disk) left of its lines, and a file
        this append made, so the log is as it was (not a torn tail, not an empty new log)."""
        try:
            os.ftruncate(fd, size)
            if size == 0 and not segment_paths(self._path):
                self._path.unlink()  # a writer waiting for this inode's lock sees it gone and starts over
        except OSError:
            pass  # the next append recovers a torn tail (see above)

    def _open_locked(self, *, write: bool = True) -> int:
        """The active file, opened and locked (the one the name points to once locked):
        exclusively and created if need be to write; shared, and FileNotFoundError if missing, to read."""
        while True:
            if write:
                self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            else:
                fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
                if os.fstat(fd).st_ino == inode_of(self._path):
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # rotated away while we waited for it: lock the new active file

    def _segment_tail(self) -> _Tail:
        """An empty active file continues the chain of the newest segment (a damaged end
        there is not recovered in this file: `verify_chain` reports it)."""
        segments = segment_paths(self._path)
        if not segments:
            return _Tail(prev=GENESIS, seq=0, damage=None)
        fd = os.open(segments[-1], os.O_RDONLY | os.O_CLOEXEC)
        try:
            tail = _read_tail(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        return _Tail(prev=tail.prev, seq=tail.seq, damage=None)

    def _rotate(self, fd: int, first: bytes) -> None:
        """With the lock on `fd` (the active file): make `first` the start of a new active file."""
        staging = staging_path(self._path)
        new = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(new, first)
            os.fsync(new)
        finally:
            os.close(new)
        segments = segment_paths(self._path)
        if not (segments and os.stat(segments[-1]).st_ino == os.fstat(fd).st_ino):  # else: linked before a crash
            os.link(self._path, next_segment(self._path))
            _fsync_dir(self._path.parent)  # the segment's name first: the rename must not lose the records
        os.rename(staging, self._path)
        _fsync_dir(self._path.parent)
        if self._keep is not None:
            segments = segment_paths(self._path)
            for old in segments[:max(len(segments) - self._keep, 0)]:
                old.unlink(missing_ok=True)


def _write_error(path: Path, exc: OSError) -> AgentboxError:
    return AgentboxError(f"cannot write the audit log {path}: {exc.strerror or exc}",
                         hint=f"check the free space and the permissions of {path.parent}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_tail(fd: int, size: int) -> _Tail:
    if size == 0:
        return _Tail(prev=GENESIS, seq=0, damage=None)
    terminated = os.pread(fd, 1, size - 1) == b"\n"
    start, line = _line_ending_at(fd, size)
    if terminated:
        try:
            record = parse_record(line)
        except BadRecord as exc:
            reason = f"not a valid record: {exc}"
        else:
            return _Tail(prev=record.digest, seq=record.seq, damage=None)
    else:
        reason = "unterminated: a write was interrupted"
    damage = _Damage(offset=start, length=len(line), digest=line_digest(line), reason=reason, terminated=terminated)
    last = _last_record_before(fd, start)
    return _Tail(prev=damage.digest, seq=last.seq if last else 0, damage=damage)


def _head_of(fd: int, size: int) -> AuditHead | None:
    """The last valid record of a file: the tail's, or the one before a damaged tail."""
    tail = _read_tail(fd, size)
    if tail.damage is None:
        return AuditHead(seq=tail.seq, hash=tail.prev) if tail.seq else None
    last = _last_record_before(fd, tail.damage.offset)
    return AuditHead(seq=last.seq, hash=last.digest) if last else None


def _line_ending_at(fd: int, end: int) -> tuple[int, bytes]:
    """The line whose last byte (its newline, if it has one) is at end-1: (offset, bytes without newline)."""
    stop = end - 1 if end > 0 and os.pread(fd, 1, end - 1) == b"\n" else end
    chunks: list[bytes] = []
    pos = stop
    while pos > 0:
        step = min(_CHUNK, pos)
        block = os.pread(fd, step, pos - step)
        cut = block.rfind(b"\n")
        if cut >= 0:
            chunks.append(block[cut + 1:])
            pos = pos - step + cut + 1
            break
        chunks.append(block)
        pos -= step
    return pos, b"".join(reversed(chunks))


def _last_record_before(fd: int, end: int) -> AuditRecord | None:
    """The last valid record before byte `end`, skipping damaged lines; None if none."""
    while end > 0:
        start, line = _line_ending_at(fd, end)
        try:
            return parse_record(line)
        except BadRecord:
            end = start
    return None
