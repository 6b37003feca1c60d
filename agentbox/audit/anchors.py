"""Anchors: the audit log's head noted outside the log, so a log cut short shows.

A hash chain cannot tell a log whose newest records were removed from one that simply ends
there. So at lifecycle moments (reset, stop, session end, checkpoint, destroy, a receipt
written; not on every append: network decisions come many a second) the services note the
head (seq and line hash of the last record) in `NAME.anchors.jsonl` beside the log, one
JSON line each. Receipts carry the head too. `verify_chain` then requires the log to hold
each anchored record, unchanged: a log that ends before one is truncated.

Someone able to rewrite the log can rewrite this file as well; it guards against a cut or
a casual edit of the log alone, and a receipt's copy of the head also survives the loss of
this file.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from agentbox.audit.chain import AuditLog, _fsync_dir, _write_all
from agentbox.audit.record import format_ts
from agentbox.errors import AgentboxError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Anchor:
    """Record `seq` of the log had this line hash at `ts`; `why` names the moment."""

    seq: int
    hash: str
    ts: datetime
    why: str


@dataclass(frozen=True)
class AnchorFile:
    path: Path
    exists: bool  # False: a log from before anchors (or the file was deleted)
    anchors: tuple[Anchor, ...]
    unreadable: int  # lines that are not anchors (a write cut short, or an edit)


def anchors_path(log: Path) -> Path:
    """`NAME.anchors.jsonl` beside `NAME.jsonl` (workspace names have no dots: no clash)."""
    return log.with_name(log.name.removesuffix(".jsonl") + ".anchors.jsonl")


def record_anchor(*, log: AuditLog, why: str) -> Anchor | None:
    """Note the log's current head in its anchors file (fsync'd); None when the log has no record."""
    head = log.head()
    if head is None:
        return None
    anchor = Anchor(seq=head.seq, hash=head.hash, ts=log.clock(), why=why)
    line = json.dumps({"seq": anchor.seq, "hash": anchor.hash, "ts": format_ts(anchor.ts), "why": why},
                      sort_keys=True).encode() + b"\n"
    path = anchors_path(log.path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # whole lines, whoever else writes one
            new = os.fstat(fd).st_size == 0
            _write_all(fd, line)
            os.fsync(fd)
            if new:
                _fsync_dir(path.parent)
        finally:
            os.close(fd)
    except OSError as exc:
        raise AgentboxError(f"cannot write the audit anchors {path}: {exc.strerror or exc}",
                            hint=f"check the free space and the permissions of {path.parent}") from None
    return anchor


def read_anchors(*, log: Path) -> AnchorFile:
    path = anchors_path(log)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return AnchorFile(path=path, exists=False, anchors=(), unreadable=0)
    except OSError as exc:
        raise AgentboxError(f"cannot read the audit anchors {path}: {exc.strerror or exc}") from None
    anchors, unreadable = [], 0
    for line in data.splitlines():
        anchor = _parse(line)
        if anchor is None:
            unreadable += 1
        else:
            anchors.append(anchor)
    return AnchorFile(path=path, exists=True, anchors=tuple(anchors), unreadable=unreadable)


def remove_anchors(log: Path) -> None:
    """With the log (`destroy --purge`)."""
    anchors_path(log).unlink(missing_ok=True)


def _parse(line: bytes) -> Anchor | None:
    try:
        raw = json.loads(line)
        seq, digest, why = raw["seq"], raw["hash"], raw["why"]
        ts = datetime.fromisoformat(raw["ts"])
    except (ValueError, KeyError, TypeError):
        return None
    if (not isinstance(seq, int) or isinstance(seq, bool) or seq < 1 or not isinstance(digest, str)
            or not _HEX64.match(digest) or not isinstance(why, str)):
        return None
    return Anchor(seq=seq, hash=digest, ts=ts if ts.tzinfo else ts.replace(tzinfo=UTC), why=why)
