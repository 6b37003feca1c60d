"""Reading a JSONL log's lines: forward from an offset, backward from the end, and onward
from where a reader left off across the log's segments (see segments.py).

Readers never hold the lock while they work: they take it shared just long enough to note
the file's size. The audit appender holds it exclusively for a whole append, so that size is
always at a record boundary, and bytes before it never change in an append-only file.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from agentbox.audit.segments import inode_of, log_files, segment_paths

T = TypeVar("T")

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


def reverse_lines(fd: int, *, end: int, chunk: int = _CHUNK) -> Iterator[bytes]:
    """The terminated lines in bytes [0, end), newest first, read in blocks from the end.

    Bytes after the last newline (a line still being written, or torn) are not a line yet."""
    stop = _after_last_newline(fd, end, chunk)
    pos, pieces = stop - 1, []  # pieces: the current line's bytes so far, last piece first
    while pos > 0:
        step = min(chunk, pos)
        pos -= step
        block = os.pread(fd, step, pos)
        if len(block) != step:
            return  # shrank under us: only a purge does that
        parts = block.split(b"\n")
        if len(parts) == 1:
            pieces.append(block)
            continue
        pieces.append(parts[-1])
        yield b"".join(reversed(pieces))
        yield from reversed(parts[1:-1])
        pieces = [parts[0]]
    if stop > 0:
        yield b"".join(reversed(pieces))


def _after_last_newline(fd: int, end: int, chunk: int) -> int:
    pos = end
    while pos > 0:
        step = min(chunk, pos)
        cut = os.pread(fd, step, pos - step).rfind(b"\n")
        if cut >= 0:
            return pos - step + cut + 1
        pos -= step
    return 0


class Cursor:
    """Where a reader of a segmented log is: a file (by inode, which rotation keeps) and an offset."""

    def __init__(self) -> None:
        self.inode: int | None = None
        self.pos = 0


def lines_after(*, path: Path, cursor: Cursor) -> Iterator[bytes]:
    """The complete lines after `cursor`, through the segments into the active file, moving it on.

    A file the cursor was in that has since been rotated is read to its end first, then the
    newer ones. A cursor whose file is gone (the log was purged) starts over at the oldest."""
    files = log_files(path)
    inodes = [inode_of(file) for file in files]
    if cursor.inode in inodes:
        first = inodes.index(cursor.inode)
    else:
        first, cursor.inode, cursor.pos = 0, None, 0
    for index in range(first, len(files)):
        try:
            fd = os.open(files[index], os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            stat = os.fstat(fd)
            if stat.st_ino != cursor.inode or stat.st_size < cursor.pos:
                cursor.inode, cursor.pos = stat.st_ino, 0
            for line in scan_lines(fd, start=cursor.pos, end=settled_size(fd)):
                if not line.terminated:
                    if index == len(files) - 1:
                        break  # being written: read it whole next time
                    cursor.pos = line.offset + len(line.data)  # a segment never grows: past it
                    break
                cursor.pos = line.offset + len(line.data) + 1
                yield line.data
        finally:
            os.close(fd)


def last_lines(*, path: Path, count: int, parse: Callable[[bytes], T | None],
               cursor: Cursor | None = None) -> list[T]:
    """The newest `count` complete lines that `parse` turns into something (None: skip the
    line), parsed and oldest first. Reads backward from the end of the active file, and into
    older segments only as far as it must. `cursor`, if given, is set to the end of what was
    read, for `lines_after` to go on from."""
    found: list[T] = []
    seen: set[int] = set()  # a file rotated while we read has two names: read it once
    for file in _newest_first(path):
        if len(found) >= count:
            break
        try:
            fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            inode = os.fstat(fd).st_ino
            if inode in seen:
                continue
            end = settled_size(fd)
            if cursor is not None and not seen:
                cursor.inode, cursor.pos = inode, _after_last_newline(fd, end, _CHUNK)
            seen.add(inode)
            for data in reverse_lines(fd, end=end):
                item = parse(data)
                if item is not None:
                    found.append(item)
                    if len(found) >= count:
                        break
        finally:
            os.close(fd)
    return found[::-1]


def _newest_first(path: Path) -> Iterator[Path]:
    yield path
    # Listed only once the active file is open: a rotation in between cannot hide a segment.
    yield from reversed(segment_paths(path))
