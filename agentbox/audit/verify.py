"""Walking an audit log's hash chain and naming the first place it breaks.

The walk is one streaming pass through the segments in order, then the active file: the
chain runs across them (a segment's first record links to the last one of the segment
before), so a segment deleted, edited or put out of order breaks it there. Only when a
link is broken does a second pass look at the whole file to tell an edit from a deletion,
a reordering or an insertion. Limits of any hash chain kept in the files it protects: the
newest record can be removed (or rewritten) without a trace, and so can the whole chain by
someone who recomputes every hash. The anchors (anchors.py, and the heads the receipts hold)
catch that: once the chain holds, each anchored record must be there, with the same hash.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from agentbox.audit.anchors import Anchor, read_anchors
from agentbox.audit.lines import Line, scan_lines, settled_size
from agentbox.audit.reader import open_log
from agentbox.audit.record import GENESIS, TORN_TAIL_EVENT, AuditRecord, BadRecord, line_digest, parse_record
from agentbox.audit.segments import inode_of, segment_paths
from agentbox.errors import NotFound


class BreakKind(StrEnum):
    BAD_JSON = "bad-json"  # a line that is not a well-formed record
    EDITED = "edited"  # a record changed after the next one was written (or an anchor vouched for it)
    DELETED = "deleted"  # records missing (seq jumps, and the link points nowhere)
    REORDERED = "reordered"  # a record links to one that comes after it
    INSERTED = "inserted"  # a line the chain links past
    SEQ_GAP = "seq-gap"  # the link holds but seq is not the next number
    TORN_TAIL = "torn-tail"  # the last line has no newline: a write was cut short
    TRUNCATED = "truncated"  # the log ends before a record an anchor vouches for
    BROKEN_LINK = "broken-link"  # none of the above explains it


@dataclass(frozen=True)
class ChainBreak:
    line: int  # 1-based line number to look at
    kind: BreakKind
    detail: str
    file: Path | None = None  # the file holding that line (the active file or a segment)


@dataclass(frozen=True)
class RecoveredDamage:
    """A damaged line (usually an interrupted write) that a later append acknowledged."""

    line: int
    offset: int
    length: int
    reason: str
    recovered_by: int  # line of the audit.torn_tail record
    file: Path | None = None  # the file holding both lines


@dataclass(frozen=True)
class VerifyResult:
    path: Path
    records: int  # valid, linked records before the first break (all of them when intact)
    head: str  # when intact: hash of the last record (GENESIS when none), the chain's tip
    first_break: ChainBreak | None
    recovered: tuple[RecoveredDamage, ...]
    files: tuple[Path, ...] = ()  # the log's files, oldest first: its segments, then the active file
    anchors: int = 0  # anchors (and receipt heads) the log was checked against
    anchors_file: Path | None = None  # None: there is none (a log from before anchors)
    unreadable_anchors: int = 0  # lines of the anchors file that are not anchors
    first_seq: int = 1  # a log that keeps only its newest segments starts later; anchors before it are not checked

    @property
    def intact(self) -> bool:
        return self.first_break is None


def verify_chain(*, path: Path, vouchers: Iterable[Anchor] = (), kept_segments: int | None = None) -> VerifyResult:
    """Check every link of the log at `path`, across its segments, then every anchor in its
    anchors file and in `vouchers` (the receipts' heads); raise NotFound if there is no log.

    `kept_segments`: the log drops its oldest segments past that many (see chain.py), so its
    chain may start after genesis, but only while that many segments are there."""
    anchor_file = read_anchors(log=path)
    anchors = (*anchor_file.anchors, *vouchers)
    try:
        active: int | None = open_log(path)
    except NotFound:
        active = None
    try:
        # Listed with the active file open: one rotated meanwhile is walked once, as the active file.
        inode = os.fstat(active).st_ino if active is not None else None
        segments = tuple(s for s in segment_paths(path) if inode_of(s) != inode)
        if active is None and not segments:
            open_log(path)  # raises NotFound
        walk, first_break = _Walk(wanted={a.seq for a in anchors}), None
        if kept_segments is not None:
            walk.trimmed = (len(segments), kept_segments)
        for segment in segments:
            fd = open_log(segment)  # one at a time: a long-lived log has many
            try:
                first_break = walk.run(fd=fd, end=settled_size(fd), file=segment)
            finally:
                os.close(fd)
            if first_break is not None:
                break
        if first_break is None and active is not None:
            first_break = walk.run(fd=active, end=settled_size(active), file=path)
    finally:
        if active is not None:
            os.close(active)
    if first_break is None:
        first_break = walk.check(anchors)
    return VerifyResult(path=path, records=walk.count, head=walk.head, first_break=first_break,
                        recovered=tuple(walk.recovered), files=segments + ((path,) if active is not None else ()),
                        anchors=len(anchors), anchors_file=anchor_file.path if anchor_file.exists else None,
                        unreadable_anchors=anchor_file.unreadable, first_seq=walk.first_seq)


class _Walk:
    def __init__(self, *, wanted: set[int]) -> None:
        self.fd, self.end, self.file = -1, 0, Path()
        self.count, self.head, self.next_seq = 0, GENESIS, 1
        self.head_at: tuple[Path, int] | None = None  # file and line of the record `head` is the hash of
        self.recovered: list[RecoveredDamage] = []
        self.wanted = wanted  # seqs that anchors vouch for
        self.found: dict[int, tuple[str, Path, int]] = {}  # seq -> hash, file and line of that record
        self.trimmed: tuple[int, int] | None = None  # (segments there, segments kept) of a log that drops old ones
        self.first_seq = 1

    def check(self, anchors: Iterable[Anchor]) -> ChainBreak | None:
        """After an intact walk: the first anchored record changed, else the furthest one missing."""
        last = self.next_seq - 1
        anchors = [a for a in anchors if a.seq >= self.first_seq]  # older ones were rotated out
        for anchor in sorted(anchors, key=lambda a: a.seq):
            found = self.found.get(anchor.seq)
            if found is not None and found[0] != anchor.hash:
                _, file, line = found
                self.count = anchor.seq - 1
                return ChainBreak(line=line, file=file, kind=BreakKind.EDITED, detail=(
                    f"record {anchor.seq} (line {line}) is not the one {_named(anchor)} vouches for: "
                    "it was changed or the log rewritten"))
        beyond = max((a for a in anchors if a.seq > last), key=lambda a: a.seq, default=None)
        if beyond is None:
            return None
        line = self.head_at[1] + 1 if self.head_at else 1
        return ChainBreak(line=line, file=self.head_at[0] if self.head_at else None, kind=BreakKind.TRUNCATED,
                          detail=(f"the log ends at record {last} but {_named(beyond)} vouches for record "
                                  f"{beyond.seq}: records were removed"))

    def run(self, *, fd: int, end: int, file: Path) -> ChainBreak | None:
        """Walk one file on from where the previous one left the chain."""
        self.fd, self.end, self.file = fd, end, file
        found = self._run()
        return None if found is None else replace(found, file=found.file or file)

    def _run(self) -> ChainBreak | None:
        damaged: tuple[Line, str] | None = None  # allowed only if the next record acknowledges it
        for line in scan_lines(self.fd, end=self.end):
            if not line.terminated:
                if damaged:
                    return _bad(*damaged)
                return ChainBreak(line=line.number, kind=BreakKind.TORN_TAIL, detail=(
                    f"line {line.number} is unterminated ({len(line.data)} bytes at offset {line.offset}): "
                    "a write was cut short or the file was truncated"))
            try:
                record = parse_record(line.data)
            except BadRecord as exc:
                if damaged:
                    return _bad(*damaged)
                damaged = (line, str(exc))
                continue
            if damaged:
                bad_line = damaged[0]
                if not _acknowledges(record, bad_line):
                    return _bad(*damaged)
                self.recovered.append(RecoveredDamage(
                    line=bad_line.number, offset=bad_line.offset, length=len(bad_line.data),
                    reason=str(record.details.get("reason", "")), recovered_by=line.number, file=self.file))
                self.head, damaged = line_digest(bad_line.data), None
            if record.prev != self.head and self.head_at is None and self.trimmed is not None:
                trim = self._trimmed_start(number=line.number, record=record)
                if trim is not None:
                    return trim
            if record.prev != self.head:
                if line.number == 1 and self.head_at is not None:
                    return self._boundary(record=record)
                return self._diagnose(number=line.number, record=record)
            if record.seq != self.next_seq:
                return ChainBreak(line=line.number, kind=BreakKind.SEQ_GAP, detail=(
                    f"line {line.number} has seq {record.seq}, expected {self.next_seq}"))
            self.count, self.head, self.next_seq = self.count + 1, record.digest, record.seq + 1
            self.head_at = (self.file, line.number)
            if record.seq in self.wanted:
                self.found[record.seq] = (record.digest, self.file, line.number)
        return _bad(*damaged) if damaged else None

    def _trimmed_start(self, *, number: int, record: AuditRecord) -> ChainBreak | None:
        """The first record of a log that drops its oldest segments: where its chain starts
        (None), unless fewer segments are left than rotation keeps: then some were deleted."""
        assert self.trimmed is not None
        there, kept = self.trimmed
        if record.prev == GENESIS or number != 1:
            return None  # the usual checks apply
        if there < kept:
            return ChainBreak(line=1, kind=BreakKind.DELETED, detail=(
                f"the log starts at record {record.seq}, after records that are not there, with {there} "
                f"rotated segment(s): rotation drops old records only while {kept} remain, so some were deleted"))
        self.head, self.next_seq, self.first_seq = record.prev, record.seq, record.seq
        return None

    def _boundary(self, *, record: AuditRecord) -> ChainBreak:
        """The first record of a file does not link to the last one of the file before it."""
        assert self.head_at is not None
        before, last = self.head_at
        if record.prev == GENESIS:
            return ChainBreak(line=1, kind=BreakKind.BROKEN_LINK, detail=(
                f"line 1 starts a new chain (genesis link), but {before.name} comes before it"))
        if record.seq > self.next_seq:
            return ChainBreak(line=1, kind=BreakKind.DELETED, detail=(
                f"{record.seq - self.next_seq} record(s) missing before line 1 (after {before.name}): seq jumps "
                f"from {self.next_seq - 1} to {record.seq}; a segment was deleted?"))
        if record.seq == self.next_seq:
            self.count -= 1
            return ChainBreak(line=last, file=before, kind=BreakKind.EDITED, detail=(
                f"line {last} (the last of {before.name}) was changed after it was written: "
                f"line 1 of {self.file.name} holds a different hash for it"))
        return ChainBreak(line=1, kind=BreakKind.REORDERED, detail=(
            f"line 1 has seq {record.seq}, but {before.name} ends at {self.next_seq - 1}: segments out of order"))

    def _diagnose(self, *, number: int, record: AuditRecord) -> ChainBreak:
        """Line `number` does not link to what precedes it: work out why from the whole file."""
        lines = list(scan_lines(self.fd, end=self.end))
        found = self._explain(number=number, record=record, lines=lines)
        # Records from the blamed line on were linked before the break showed: not verified.
        self.count -= sum(1 for n in range(found.line, number) if _record_at(lines, n) is not None)
        return found

    def _explain(self, *, number: int, record: AuditRecord, lines: list[Line]) -> ChainBreak:
        digests = {line_digest(line.data): line.number for line in lines}
        following = _record_at(lines, number + 1)
        target = digests.get(record.prev)
        if target is not None and target > number:
            return ChainBreak(line=number, kind=BreakKind.REORDERED, detail=(
                f"line {number} links to line {target}, which comes after it: records were moved"))
        if following is not None and following.prev == self.head:
            return ChainBreak(line=number, kind=BreakKind.INSERTED, detail=(
                f"line {number} was inserted: line {number + 1} links past it"))
        if target is not None and target < number - 1:
            extra = f"line {target + 1} was" if target + 1 == number - 1 else f"lines {target + 1}-{number - 1} were"
            return ChainBreak(line=target + 1, kind=BreakKind.INSERTED, detail=(
                f"{extra} inserted: line {number} links to line {target}"))
        if target is None and record.seq > self.next_seq:
            missing = record.seq - self.next_seq
            return ChainBreak(line=number, kind=BreakKind.DELETED, detail=(
                f"{missing} record(s) missing before line {number}: seq jumps from {self.next_seq - 1} "
                f"to {record.seq}"))
        if target is None and record.prev != GENESIS and number > 1:
            return ChainBreak(line=number - 1, kind=BreakKind.EDITED, detail=(
                f"line {number - 1} was changed after it was written: line {number} holds a different hash for it"))
        if target is None and number == 1:
            return ChainBreak(line=1, kind=BreakKind.EDITED, detail=(
                "line 1 was changed: the first record must link to the genesis hash"))
        if record.prev == GENESIS:
            return ChainBreak(line=number, kind=BreakKind.BROKEN_LINK, detail=(
                f"line {number} starts a new chain (genesis link) in the middle of the log"))
        return ChainBreak(line=number, kind=BreakKind.BROKEN_LINK, detail=(
            f"line {number} does not link to the record before it"))


def _named(anchor: Anchor) -> str:
    """How a break names an anchor; `why` is read from a file, so control characters are escaped."""
    why = "".join(c if c.isprintable() else repr(c)[1:-1] for c in anchor.why)
    return f"an anchor from {anchor.ts.astimezone().strftime('%Y-%m-%d %H:%M:%S')} ({why})"


def _acknowledges(record: AuditRecord, damaged: Line) -> bool:
    return (record.event == TORN_TAIL_EVENT and record.prev == line_digest(damaged.data)
            and record.details.get("offset") == damaged.offset)


def _bad(line: Line, reason: str) -> ChainBreak:
    return ChainBreak(line=line.number, kind=BreakKind.BAD_JSON,
                      detail=f"line {line.number} is not a valid audit record ({reason})")


def _record_at(lines: list[Line], number: int) -> AuditRecord | None:
    if number > len(lines) or not lines[number - 1].terminated:
        return None
    try:
        return parse_record(lines[number - 1].data)
    except BadRecord:
        return None
