"""Stored session recordings: data_dir/evidence/NAME/recordings/ID.cast (asciicast v2, 0600),
kept after reset and destroy like receipts. A `recording.started` audit record names each one
when it begins and a `recording.saved` record holds its SHA-256 when it ends, so an edited,
planted or cut-off recording shows when it is listed or played back."""

from __future__ import annotations

import codecs
import hashlib
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from agentbox.audit import read_records
from agentbox.config.paths import AppPaths
from agentbox.errors import AgentboxError, InvalidInput, NotFound
from agentbox.model.names import validate_workspace_name
from agentbox.model.recording import (
    RECORDING_SAVED_EVENT,
    RECORDING_STARTED_EVENT,
    Cast,
    RecordingIntegrity,
    RecordingKind,
    RecordingSummary,
    event_line,
    header_line,
    parse_cast,
)
from agentbox.model.redaction import redact_text

_ID = re.compile(r"^[0-9a-f]{4,32}$")
_FLUSH_BYTES = 16384  # a screenful without a newline is written as it is
_FLUSH_S = 0.2  # text without a newline waits at most this long for the rest of its line


@dataclass(frozen=True)
class SavedCast:
    path: Path
    sha256: str
    bytes: int
    duration_s: float
    redacted: int  # likely secrets replaced before they were written


class CastWriter:
    """Appends output events, a line at a time, with likely secrets redacted before they
    reach the disk: a key printed on the screen must not be kept in the evidence."""

    def __init__(self, *, path: Path, width: int, height: int, title: str) -> None:
        self.path = path
        self.id = path.stem
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._digest = hashlib.sha256()
        self._size = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._pending_at = 0.0
        self._last_at = 0.0
        self.redacted = 0
        self._append(header_line(width=width, height=height, timestamp=int(time.time()), title=title))

    def write(self, at: float, data: bytes) -> None:
        text = self._decoder.decode(data)
        if not text:
            return
        if not self._pending:
            self._pending_at = at
        self._pending += text
        self._last_at = at
        cut = self._pending.rfind("\n") + 1
        if cut == 0 and (len(self._pending) >= _FLUSH_BYTES or at - self._pending_at >= _FLUSH_S):
            cut = len(self._pending)
        if cut:
            self._emit(self._pending_at, self._pending[:cut])
            self._pending = self._pending[cut:]
            self._pending_at = at

    def close(self) -> SavedCast:
        rest = self._pending + self._decoder.decode(b"", final=True)
        if rest:
            self._emit(self._pending_at, rest)
        self._pending = ""
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
        return SavedCast(path=self.path, sha256=self._digest.hexdigest(), bytes=self._size,
                         duration_s=round(self._last_at, 3), redacted=self.redacted)

    def abandon(self) -> None:
        """Close without flushing (the recording failed to start)."""
        os.close(self._fd)

    def _emit(self, at: float, text: str) -> None:
        clean, count = redact_text(text)
        self.redacted += count
        self._append(event_line(at=at, text=clean))

    def _append(self, line: bytes) -> None:
        view = memoryview(line)
        while view:
            view = view[os.write(self._fd, view):]
        self._digest.update(line)
        self._size += len(line)


@dataclass(frozen=True)
class StoredCast:
    cast: Cast
    summary: RecordingSummary


class RecordingStore:
    def __init__(self, *, paths: AppPaths) -> None:
        self._paths = paths

    def new(self, *, name: str, width: int, height: int, title: str) -> CastWriter:
        directory = self._paths.workspace_recordings(name)
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            return CastWriter(path=directory / f"{secrets.token_hex(6)}.cast", width=width, height=height,
                              title=title)
        except OSError as exc:
            raise AgentboxError(f"cannot start the session recording in {directory}: {exc.strerror or exc}",
                                hint=f"check the free space and the permissions of {directory}, "
                                     "or set record_sessions: false") from None

    def list(self, *, name: str) -> tuple[RecordingSummary, ...]:
        """Oldest first: every recording a file or the audit log knows of, with its integrity."""
        validate_workspace_name(name)
        known = self._from_log(name)
        directory = self._paths.workspace_recordings(name)
        on_disk = {p.stem: p for p in directory.glob("*.cast")} if directory.is_dir() else {}
        found = []
        for recording_id in list(known) + sorted(set(on_disk) - set(known)):
            found.append(self._summary(recording_id, known.get(recording_id), on_disk.get(recording_id)))
        return tuple(found)

    def get(self, *, name: str, recording_id: str) -> StoredCast:
        """One recording by its id (or a unique start of it), parsed, with its integrity."""
        validate_workspace_name(name)
        listing = f"agentbox recordings {name} lists them"
        if not _ID.match(recording_id):
            raise InvalidInput(f"{recording_id!r} is not a recording id (4 to 32 hex digits)", hint=listing)
        matches = [s for s in self.list(name=name) if s.id.startswith(recording_id)]
        if not matches:
            raise NotFound(f"workspace {name!r} has no recording {recording_id!r}", hint=listing)
        if len(matches) > 1:
            raise InvalidInput(f"{recording_id!r} matches {len(matches)} recordings of {name!r}: "
                               + ", ".join(s.id for s in matches), hint="give more of the id")
        summary = matches[0]
        path = self._paths.workspace_recordings(name) / f"{summary.id}.cast"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"the recording {summary.id} of {name!r} is gone: its file {path} was removed",
                           hint="the audit log still holds its SHA-256 (agentbox audit " + name + ")") from None
        except OSError as exc:
            raise AgentboxError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            cast = parse_cast(data)
        except ValueError as exc:
            raise AgentboxError(f"{path} is not a recording agentbox can play: {exc}",
                                hint="it was changed after it was saved" if summary.sha256 else "") from None
        return StoredCast(cast=cast, summary=summary)

    def purge(self, *, name: str) -> None:
        shutil.rmtree(self._paths.evidence_dir / name, ignore_errors=True)

    def _from_log(self, name: str) -> dict[str, dict[str, object]]:
        """id -> what the audit log says of it (the saved record wins over the started one)."""
        known: dict[str, dict[str, object]] = {}
        try:
            for record in read_records(path=self._paths.audit_log(name)):
                if record.event not in (RECORDING_STARTED_EVENT, RECORDING_SAVED_EVENT):
                    continue
                recording_id = str(record.details.get("recording") or "")
                if not recording_id:
                    continue
                entry = known.setdefault(recording_id, {"started": record.ts.isoformat(timespec="seconds")})
                entry.update(record.details)
                entry["saved"] = entry.get("saved") or record.event == RECORDING_SAVED_EVENT
        except NotFound:
            pass
        return known

    def _summary(self, recording_id: str, logged: dict[str, object] | None, path: Path | None) -> RecordingSummary:
        size = path.stat().st_size if path is not None else 0
        if logged is None:
            return RecordingSummary(id=recording_id, kind=None, started="", duration_s=0.0, bytes=size, sha256="",
                                    integrity=RecordingIntegrity.UNRECORDED)
        sha = str(logged.get("sha256") or "")
        if path is None:
            integrity = RecordingIntegrity.MISSING
        elif not logged.get("saved"):
            integrity = RecordingIntegrity.INCOMPLETE
        else:
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
            integrity = RecordingIntegrity.MATCHES if actual == sha else RecordingIntegrity.DIFFERS
        try:
            kind: RecordingKind | None = RecordingKind(str(logged.get("kind")))
        except ValueError:
            kind = None
        argv = logged.get("argv")
        duration = logged.get("duration_s")
        return RecordingSummary(
            id=recording_id, kind=kind, started=str(logged.get("started") or ""),
            duration_s=float(duration) if isinstance(duration, (int, float)) else 0.0, bytes=size, sha256=sha,
            integrity=integrity, argv=tuple(str(a) for a in argv) if isinstance(argv, list) else ())
