"""One recording being written: noted in the audit log before its first byte
(`recording.started`, so one cut off by a kill is listed as incomplete, not lost) and again
with its SHA-256 once the file is closed (`recording.saved`), which is what makes a later
edit of it show."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from agentbox.model.recording import RECORDING_SAVED_EVENT, RECORDING_STARTED_EVENT, RecordingKind
from agentbox.model.redaction import redact_argv
from agentbox.services.context import ServiceContext
from agentbox.stores.recordings import CastWriter, RecordingStore


class ActiveRecording:
    """A recording being written; `exit_code` is noted in its saved record."""

    def __init__(self, *, writer: CastWriter) -> None:
        self._writer = writer
        self._started = time.monotonic()
        self.id = writer.id
        self.exit_code: int | None = None

    def write(self, at: float, data: bytes) -> None:
        self._writer.write(at, data)

    def output(self, data: bytes) -> None:
        """Output that arrives now (for callers that do not time it themselves)."""
        self._writer.write(time.monotonic() - self._started, data)


@contextmanager
def recording(*, ctx: ServiceContext, name: str, kind: RecordingKind, argv: Sequence[str],
              size: tuple[int, int] = (80, 24)) -> Iterator[ActiveRecording]:
    """Record what the block shows; saved (and audited) however the block ends."""
    shown = redact_argv(argv)
    writer = RecordingStore(paths=ctx.paths).new(name=name, width=size[0], height=size[1],
                                                  title=f"{name}: {' '.join(shown.argv)}"[:200])
    audit = ctx.audit(name=name)
    try:
        audit.append(event=RECORDING_STARTED_EVENT, details={"recording": writer.id, "kind": kind.value,
                                                             "argv": list(shown.argv)})
    except BaseException:
        writer.abandon()
        writer.path.unlink(missing_ok=True)
        raise
    active = ActiveRecording(writer=writer)
    try:
        yield active
    finally:
        saved = writer.close()
        audit.append(event=RECORDING_SAVED_EVENT, details={
            "recording": writer.id, "kind": kind.value, "argv": list(shown.argv), "sha256": saved.sha256,
            "bytes": saved.bytes, "duration_s": saved.duration_s, "exit_code": active.exit_code,
            **({"redacted": saved.redacted} if saved.redacted else {})})
