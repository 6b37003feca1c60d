"""The decision trail: a workspace's `net.jsonl`, every decision its gateways make (the egress
proxy's connections; a credential gateway would append its own events here), as a hash
chain of its own, kept bounded.

It is the same chain as the audit log (chain.py: seq, ts, event, details, prev on each
line, continuing across rotation) with two differences: only the newest TRAIL_SEGMENTS
segments are kept (the TUI and `agentbox net` read it; the audit log keeps everything),
and appends are not fsync'd one by one (decisions come many a second). Its head is noted
in the workspace's audit log (a `network.head` record) at each moment the audit log is
anchored, so `audit verify` finds a decision edited, deleted, reordered or cut off the end
of the trail (`verify_trail`).

Lines from before the chain (plain JSON decisions, no seq or prev) are moved aside, once,
to `net.unchained.jsonl.N` by the first chained writer: they can be read, not verified.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from agentbox.audit.anchors import Anchor
from agentbox.audit.chain import AuditLog
from agentbox.audit.record import utc_now
from agentbox.audit.segments import log_files, next_segment
from agentbox.audit.verify import VerifyResult, verify_chain
from agentbox.errors import NotFound

TRAIL_ROTATE_BYTES = 8 << 20
TRAIL_SEGMENTS = 4  # rotated segments kept: at most ~5 x 8 MiB on disk
DECISION_EVENT = "network.decision"
HEAD_EVENT = "network.head"  # the audit record holding the trail's head: {"seq", "hash", "why"}


def decision_trail(*, path: Path, clock: Callable[[], datetime] = utc_now,
                   rotate_bytes: int = TRAIL_ROTATE_BYTES) -> AuditLog:
    return AuditLog(path=path, clock=clock, rotate_bytes=rotate_bytes, keep=TRAIL_SEGMENTS, durable=False)


def unchained_path(path: Path) -> Path:
    """`net.unchained.jsonl` beside `net.jsonl`: its segments hold the lines from before the chain."""
    return path.with_name(path.name.removesuffix(".jsonl") + ".unchained.jsonl")


def set_aside_unchained(path: Path) -> int:
    """Move each file of the trail at `path` that starts with a plain (unchained) decision to
    the unchained log, oldest first; returns how many. Run before the first chained append."""
    moved = 0
    for file in log_files(path):
        if _starts_unchained(file):
            os.rename(file, next_segment(unchained_path(path)))
            moved += 1
    return moved


def unchained_lines(path: Path) -> int:
    """How many lines the unchained log beside the trail at `path` holds (0: none)."""
    count = 0
    for file in log_files(unchained_path(path)):
        with file.open("rb") as handle:
            count += sum(1 for _ in handle)
    return count


@dataclass(frozen=True)
class TrailVerdict:
    """`audit verify`'s finding on the decision trail."""

    path: Path
    result: VerifyResult | None  # None: there is no trail (no decision yet, or removed with the workspace)
    heads: int  # heads the audit log noted for it (for this incarnation of the workspace)
    removed: bool  # the workspace was destroyed after its last head: its trail went with it
    unchained: int  # lines from before the chain, set aside, not verifiable

    @property
    def intact(self) -> bool:
        return self.result.intact if self.result is not None else (self.removed or self.heads == 0)


def verify_trail(*, path: Path, audit_records: Iterable[tuple[str, Mapping[str, Any], datetime]]) -> TrailVerdict:
    """Verify the trail at `path` against the heads the audit log noted for it.

    `audit_records`: (event, details, ts) of the workspace's audit log in order. Only heads
    after its last `create.started` count (a name made again starts a new trail), and a
    `destroyed` after them means the trail was removed with the workspace."""
    heads: list[Anchor] = []
    removed = False
    for event, details, ts in audit_records:
        if event == "create.started":
            heads, removed = [], False
        elif event == "destroyed":
            removed = True
        elif event == HEAD_EVENT:
            anchor = _head_anchor(details, ts)
            if anchor is not None:
                heads.append(anchor)
    unchained = unchained_lines(path)
    if removed and not log_files(path):
        return TrailVerdict(path=path, result=None, heads=len(heads), removed=True, unchained=unchained)
    try:
        result = verify_chain(path=path, vouchers=heads, kept_segments=TRAIL_SEGMENTS)
    except NotFound:
        result = None
    return TrailVerdict(path=path, result=result, heads=len(heads), removed=False, unchained=unchained)


def decision_details(line: bytes) -> Mapping[str, Any] | None:
    """A trail line's decision (its details), or an unchained line's decision; None for any
    other line (another event, or damage: `audit verify` reports that)."""
    try:
        raw = json.loads(line)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    if "prev" not in raw:
        return raw  # from before the chain
    details = raw.get("details")
    return details if raw.get("event") == DECISION_EVENT and isinstance(details, dict) else None


def _head_anchor(details: Mapping[str, Any], ts: datetime) -> Anchor | None:
    seq, digest = details.get("seq"), details.get("hash")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1 or not isinstance(digest, str):
        return None
    return Anchor(seq=seq, hash=digest, ts=ts, why=f"the audit log's {HEAD_EVENT} ({details.get('why', '')})")


def _starts_unchained(file: Path) -> bool:
    try:
        with file.open("rb") as handle:
            first = handle.readline()
    except FileNotFoundError:
        return False
    try:
        raw = json.loads(first)
    except ValueError:
        return False
    return isinstance(raw, dict) and "host" in raw and "prev" not in raw
