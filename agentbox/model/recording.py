"""Session recordings: what a terminal session showed, as an asciicast v2 file.

asciicast v2 (the asciinema format, so any asciinema player can play one back too) is a
JSON header line, then one JSON array per event: `[seconds since start, "o", text]`. Only
output is kept, as asciinema does by default: what was typed shows through the guest's
echo, and what was typed without echo (a password prompt) stays unrecorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum

CAST_VERSION = 2
RECORDING_SAVED_EVENT = "recording.saved"
RECORDING_STARTED_EVENT = "recording.started"


class RecordingKind(StrEnum):
    SHELL = "shell"  # `agentbox ssh NAME`, or a shell from the TUI
    COMMAND = "command"  # `agentbox ssh NAME -- CMD`
    EXEC = "exec"  # `agentbox exec` / `run`
    AGENT = "agent"  # an agent's terminal


class RecordingIntegrity(StrEnum):
    MATCHES = "matches"  # the file's SHA-256 is the one its `recording.saved` record holds
    DIFFERS = "differs"  # changed since it was saved
    INCOMPLETE = "incomplete"  # started, never saved (agentbox was killed during the session)
    UNRECORDED = "unrecorded"  # no audit record names it (log purged, or the file was planted)
    MISSING = "missing"  # the audit log names it, the file is gone


@dataclass(frozen=True)
class CastEvent:
    at: float  # seconds since the recording started
    text: str


@dataclass(frozen=True)
class Cast:
    width: int
    height: int
    timestamp: int  # Unix time of the start
    title: str
    events: tuple[CastEvent, ...]

    @property
    def output(self) -> str:
        return "".join(event.text for event in self.events)

    @property
    def duration_s(self) -> float:
        return self.events[-1].at if self.events else 0.0


@dataclass(frozen=True)
class RecordingSummary:
    id: str
    kind: RecordingKind | None  # None: no audit record says
    started: str  # ISO 8601 UTC ("" when unknown)
    duration_s: float
    bytes: int  # size of the cast file (0 when missing)
    sha256: str  # as the audit record holds it ("" when none does)
    integrity: RecordingIntegrity
    argv: tuple[str, ...] = ()  # what ran (redacted), as recorded


def header_line(*, width: int, height: int, timestamp: int, title: str) -> bytes:
    header = {"version": CAST_VERSION, "width": width, "height": height, "timestamp": timestamp,
              "title": title, "env": {"TERM": "xterm-256color"}}
    return json.dumps(header, sort_keys=True).encode() + b"\n"


def event_line(*, at: float, text: str) -> bytes:
    return json.dumps([round(at, 6), "o", text], ensure_ascii=False).encode() + b"\n"


def parse_cast(data: bytes) -> Cast:
    """Raises ValueError when `data` is not an asciicast v2 recording."""
    lines = data.decode("utf-8", errors="replace").splitlines()
    if not lines:
        raise ValueError("the file is empty")
    try:
        header = json.loads(lines[0])
        if not isinstance(header, dict) or header.get("version") != CAST_VERSION:
            raise ValueError("not an asciicast v2 header")
        width, height = int(header["width"]), int(header["height"])
        events = []
        for number, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            raw = json.loads(line)
            if not (isinstance(raw, list) and len(raw) == 3 and isinstance(raw[2], str)):
                raise ValueError(f"line {number} is not an event")
            if raw[1] == "o":
                events.append(CastEvent(at=float(raw[0]), text=raw[2]))
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not an asciicast v2 recording: {exc}") from None
    return Cast(width=width, height=height, timestamp=int(header.get("timestamp") or 0),
                title=str(header.get("title") or ""), events=tuple(events))
