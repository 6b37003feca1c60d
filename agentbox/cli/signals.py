"""SIGTERM and SIGHUP (a closed terminal, a `kill`) during a command that made something to
throw away: they cancel its token, so the service's own cleanup runs, as after Ctrl-C.

Cancelling, not raising from the handler: a second signal, or the terminal's SIGHUP right
after a SIGTERM, then cannot cut the cleanup itself short."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

from agentbox.model.progress import CancelToken

SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@dataclass
class Received:
    signum: int | None = None

    @property
    def exit_code(self) -> int:
        assert self.signum is not None
        return 128 + self.signum  # what a shell reports for a process a signal ended

    @property
    def name(self) -> str:
        assert self.signum is not None
        return signal.Signals(self.signum).name


@contextmanager
def cancel_on_signals(cancel: CancelToken) -> Iterator[Received]:
    """For the duration of the block, SIGTERM and SIGHUP cancel `cancel`; says which came first."""
    received = Received()
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield received
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        if received.signum is None:
            received.signum = signum
        cancel.cancel()

    previous = {signum: signal.signal(signum, handle) for signum in SIGNALS}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
