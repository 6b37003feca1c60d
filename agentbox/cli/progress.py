"""Progress lines on stderr: one line per step, a redrawn bar for measurable work on a TTY."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from agentbox.model.progress import Progress


class ProgressPrinter:
    def __init__(self, *, stream: TextIO | None = None, quiet: bool = False) -> None:
        self._stream = stream or sys.stderr
        self._quiet = quiet
        self._tty = self._stream.isatty()
        self._last_fraction_at = 0.0
        self._last_decile = -1
        self._open_bar = False

    def __call__(self, progress: Progress) -> None:
        if self._quiet:
            return
        if progress.fraction is not None:
            self._fraction(progress)
            return
        self._close_bar()
        counter = f"[{progress.index}/{progress.total}] " if progress.total else ""
        self._stream.write(f"{counter}{progress.step}: {progress.detail}\n".replace(": \n", "\n"))
        self._stream.flush()
        self._last_decile = -1

    def _fraction(self, progress: Progress) -> None:
        percent = max(0.0, min(1.0, progress.fraction or 0.0)) * 100
        if self._tty:
            now = time.monotonic()
            if now - self._last_fraction_at < 0.1 and percent < 100:
                return
            self._last_fraction_at = now
            width = 30
            filled = int(width * percent / 100)
            bar = "#" * filled + "-" * (width - filled)
            self._stream.write(f"\r  {progress.step} [{bar}] {percent:5.1f}% {progress.detail[:40]}")
            self._open_bar = True
        else:
            decile = int(percent // 10)
            if decile == self._last_decile:
                return
            self._last_decile = decile
            self._stream.write(f"  {progress.step}: {percent:.0f}% {progress.detail}\n")
        self._stream.flush()

    def _close_bar(self) -> None:
        if self._open_bar:
            self._stream.write("\n")
            self._open_bar = False
