"""A session receipt: what one session did, as agentbox stores and shows it.

Each part says where it came from; the list of files changed in the guest is the guest's
own answer and is marked untrusted. `receipt_from_json` reads a stored receipt back,
checking every field's type, since the file lives on disk where anything may change it.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from enum import StrEnum
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, get_args, get_origin, get_type_hints

from agentbox.model.api_use import ApiUse
from agentbox.model.budget import BudgetLine
from agentbox.model.audit_head import AuditHead

RECEIPT_FORMAT = 1
UNTRUSTED = "reported by the guest (untrusted)"
NOT_COVERED = (
    "commands typed in a shell are not listed one by one: `agentbox ssh`, agent and TUI shells are in the "
    "recordings below; an SSH client of your own (ssh agentbox-NAME) is not recorded",
    "files deleted in the guest: the guest lists only files that still exist",
    "connections still open when the session ended: the proxy records a connection when it closes",
    "a host-side check of the guest's files: agentbox does not read the guest's disk, so that list is the guest's word",
)


@dataclass(frozen=True)
class CommandRun:
    at: str  # when it finished (the audit record's time)
    argv: tuple[str, ...]
    exit_code: int
    duration_s: float
    stdout_bytes: int
    stderr_bytes: int
    redacted: int = 0  # likely secrets replaced in argv before it was recorded (agentbox.model.redaction)


@dataclass(frozen=True)
class RecordingRef:
    """A session recording made during the session (`agentbox replay WORKSPACE ID` plays it)."""

    id: str
    kind: str
    at: str  # when it was saved
    argv: tuple[str, ...]
    duration_s: float
    sha256: str


@dataclass(frozen=True)
class Destination:
    host: str  # as the guest asked for it
    port: int
    allowed: bool
    connections: int
    bytes_up: int  # guest to destination
    bytes_down: int


class OutboxChangeKind(StrEnum):
    ADDED = "added"
    CHANGED = "changed"
    REMOVED = "removed"


@dataclass(frozen=True)
class OutboxChange:
    path: str
    change: OutboxChangeKind
    kind: str  # file | dir | symlink | other
    size: int


@dataclass(frozen=True)
class OutboxReport:
    compared: bool  # False: no listing from the session's start, so everything present is listed as added
    changes: tuple[OutboxChange, ...]
    truncated: bool


class GuestStatus(StrEnum):
    REPORTED = "reported"
    NO_ANSWER = "no-answer"
    NOT_RUNNING = "not-running"
    NO_MARKER = "no-marker"
    FAILED = "failed"


@dataclass(frozen=True)
class GuestFile:
    path: str
    kind: str
    size: int
    modified: float  # seconds since the epoch, by the guest's clock


@dataclass(frozen=True)
class GuestReport:
    status: GuestStatus
    detail: str  # in plain words, for every status
    files: tuple[GuestFile, ...]
    truncated: bool
    source: str = UNTRUSTED


@dataclass(frozen=True)
class Receipt:
    id: str
    workspace: str
    started: str  # ISO 8601 UTC
    ended: str
    duration_s: float
    reason: str
    commands: tuple[CommandRun, ...]
    network: tuple[Destination, ...]
    outbox: OutboxReport
    guest: GuestReport
    # The audit log's head when the receipt was written (None in receipts from before it):
    # `audit verify` requires the log to still hold that record.
    audit_head: AuditHead | None = None
    recordings: tuple[RecordingRef, ...] = ()
    # API use through the credential gateway (the gateway's own count; tokens as the provider reported them)
    api: ApiUse = field(default_factory=ApiUse)
    budgets: tuple[BudgetLine, ...] = ()  # the host budgets with a limit, and what the session used
    not_covered: tuple[str, ...] = NOT_COVERED
    format: int = RECEIPT_FORMAT

    def connections(self, *, allowed: bool) -> int:
        return sum(d.connections for d in self.network if d.allowed is allowed)


class Integrity(StrEnum):
    MATCHES = "matches"  # the file's SHA-256 is the one its audit record holds
    DIFFERS = "differs"  # changed since it was written
    UNRECORDED = "unrecorded"  # no audit record names it (log purged, or the file was planted)


@dataclass(frozen=True)
class StoredReceipt:
    receipt: Receipt
    path: Path
    sha256: str
    integrity: Integrity


@dataclass(frozen=True)
class ReceiptSummary:
    id: str
    started: str
    ended: str
    duration_s: float
    commands: int
    allowed: int  # connections
    denied: int
    integrity: Integrity
    problem: str = ""  # set when the file cannot be read (then the counts are 0)


def receipt_from_json(data: object) -> Receipt:
    """Raises ValueError, KeyError or TypeError when `data` is not a receipt."""
    receipt = _build(Receipt, data)
    assert isinstance(receipt, Receipt)
    return receipt


def _build(cls: Any, value: Any) -> Any:
    """A frozen dataclass (nested ones, tuples and enums included) back from its JSON form;
    ValueError, KeyError or TypeError when the JSON does not fit."""
    if isinstance(cls, type) and is_dataclass(cls):
        if not isinstance(value, dict):
            raise TypeError(f"{cls.__name__} is not an object")
        hints = get_type_hints(cls)
        return cls(**{f.name: _build(hints[f.name], value[f.name]) for f in fields(cls)
                      if f.name in value or f.default is MISSING})
    if get_origin(cls) is UnionType and NoneType in get_args(cls):  # X | None
        return None if value is None else _build(next(a for a in get_args(cls) if a is not NoneType), value)
    if get_origin(cls) is tuple:
        if not isinstance(value, list):
            raise TypeError("expected a list")
        return tuple(_build(get_args(cls)[0], item) for item in value)
    if isinstance(cls, type) and issubclass(cls, StrEnum):
        return cls(value)
    if cls is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if cls in (str, int, float, bool) and type(value) is cls:
        return value
    raise TypeError(f"{value!r} is not a {getattr(cls, '__name__', cls)}")
