"""How the TUI hands the terminal to another program (ssh), and its tunable intervals."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from textual.app import App, SuspendNotSupported

from agentbox.errors import AgentboxError


@dataclass(frozen=True)
class TuiOptions:
    refresh_s: float = 2.0  # how often the dashboard reloads by itself
    follow_poll_s: float = 0.5  # how often a followed audit log is checked for new records


class Terminal(Protocol):
    def hand_over(self, *, app: App[Any], argv: Sequence[str], run: Callable[[], int] | None = None) -> int:
        """Run `argv` in the real terminal until it exits (through `run` when given: a recorded
        session runs it itself); return its exit code."""


class SuspendedTerminal:
    """Suspends the app (the screen is restored afterwards) and runs the program in the terminal."""

    def hand_over(self, *, app: App[Any], argv: Sequence[str], run: Callable[[], int] | None = None) -> int:
        try:
            with app.suspend():
                return run() if run is not None else subprocess.run(list(argv), check=False).returncode
        except SuspendNotSupported:
            raise AgentboxError("this terminal cannot be handed over to ssh from the TUI",
                                hint=f"run it in another terminal: {shlex.join(argv)}") from None
        except OSError as exc:
            raise AgentboxError(f"could not run {argv[0]}: {exc.strerror}",
                                hint="sudo apt-get install openssh-client") from None
