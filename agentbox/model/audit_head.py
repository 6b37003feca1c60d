"""The head of an audit log: its last record's seq and the SHA-256 of that record's line.

Kept outside the log (an anchors file, each session receipt), it lets `audit verify` notice
a log cut short or rewritten, which no chain inside the file can show."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AuditHead:
    seq: int
    hash: str
