"""Progress reporting and cancellation passed into every long operation."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from agentbox.errors import Cancelled


@dataclass(frozen=True)
class Progress:
    """One step of a long operation. `fraction` is set when the step can measure itself."""

    step: str
    detail: str = ""
    index: int = 0
    total: int = 0
    fraction: float | None = None


ProgressCallback = Callable[[Progress], object]  # what it returns is ignored


def ignore_progress(_: Progress) -> None:
    """The default sink for callers that do not show progress."""


class CancelToken:
    """Set from another thread (Ctrl-C, Esc in the TUI); checked between units of work."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")

    def wait(self, seconds: float) -> None:
        """Sleep up to `seconds`, waking early (and raising) when cancelled."""
        if self._event.wait(seconds):
            raise Cancelled("cancelled by the user")
