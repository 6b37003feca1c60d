"""One audit record: its line format, its hash, and the strict parser every reader shares.

A record is one line of JSON, terminated by a newline, with exactly the fields `seq`, `ts`,
`event`, `details` and `prev`. `prev` is the SHA-256 (hex) of the previous line's exact
bytes without its newline, or GENESIS for the first record, so each line vouches for the
one before it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64
# Written by the appender when the file did not end in a complete record (see chain.py).
TORN_TAIL_EVENT = "audit.torn_tail"
FIELDS = frozenset({"seq", "ts", "event", "details", "prev"})
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    ts: datetime  # timezone-aware, UTC, millisecond precision
    event: str
    # Read-only by convention; excluded from hashing so records stay usable in sets.
    details: Mapping[str, Any] = field(hash=False)
    prev: str
    digest: str  # SHA-256 of this record's line: the next record's `prev`

    def to_json(self) -> dict[str, Any]:
        """The record as stored, plus its own hash (for `--json` output)."""
        return {"seq": self.seq, "ts": format_ts(self.ts), "event": self.event, "details": dict(self.details),
                "prev": self.prev, "hash": self.digest}


class BadRecord(ValueError):
    """A line that is not a well-formed record (internal: never leaves the package)."""


def line_digest(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def format_ts(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds")


def encode_record(*, seq: int, ts: datetime, event: str, details: Mapping[str, Any], prev: str) -> bytes:
    """The line for a record, without its newline. json.dumps escapes newlines in values."""
    entry = {"seq": seq, "ts": format_ts(ts), "event": event, "details": dict(details), "prev": prev}
    # default=str: a Path or similar in details must not make a lifecycle step fail.
    return json.dumps(entry, sort_keys=True, default=str).encode("ascii")


def parse_record(line: bytes) -> AuditRecord:
    """Parse one line (without its newline); raise BadRecord saying what is wrong."""
    try:
        raw = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        raise BadRecord("not JSON") from None
    if not isinstance(raw, dict):
        raise BadRecord("not a JSON object")
    if set(raw) != FIELDS:
        missing, extra = sorted(FIELDS - set(raw)), sorted(set(raw) - FIELDS)
        raise BadRecord("; ".join(filter(None, (f"missing {', '.join(missing)}" if missing else "",
                                                f"unexpected {', '.join(extra)}" if extra else ""))))
    seq, ts, event, details, prev = raw["seq"], raw["ts"], raw["event"], raw["details"], raw["prev"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise BadRecord(f"seq {seq!r} is not a positive integer")
    if not isinstance(event, str) or not event:
        raise BadRecord("event is not a non-empty string")
    if not isinstance(details, dict):
        raise BadRecord("details is not an object")
    if not isinstance(prev, str) or not _HEX64.match(prev):
        raise BadRecord("prev is not a SHA-256 hex digest")
    try:
        when = datetime.fromisoformat(ts) if isinstance(ts, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise BadRecord(f"ts {ts!r} is not an ISO 8601 time with a time zone")
    return AuditRecord(seq=seq, ts=when.astimezone(UTC), event=event, details=details, prev=prev,
                       digest=line_digest(line))
