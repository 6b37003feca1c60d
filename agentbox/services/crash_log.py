"""Where an error nobody expected leaves its traceback, so a full-screen app can say where to look."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from agentbox.audit import utc_now

MAX_BYTES = 1 << 20  # past this the log starts over: it is for the latest failures, not a history


class CrashLog:
    def __init__(self, *, path: Path, clock: Callable[[], datetime] = utc_now) -> None:
        self._path = path
        self._clock = clock

    @property
    def path(self) -> Path:
        return self._path

    def write(self, *, error: BaseException, where: str) -> Path:
        """Append the traceback and cause chain of `error`; OSError if the file cannot be written."""
        text = "".join(traceback.format_exception(error))
        entry = f"--- {self._clock().isoformat(timespec='seconds')} {where}\n{text}\n"
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            if self._path.stat().st_size > MAX_BYTES:
                self._path.unlink()
        except FileNotFoundError:
            pass
        # Owner-only: a traceback can show workspace names, paths and commands.
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as out:
            out.write(entry)
        return self._path
