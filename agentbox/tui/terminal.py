"""How the TUI hands the terminal to another program (ssh), and its tunable intervals."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from textual.app import App, SuspendNotSupported

from agentbox.errors import AgentboxError


@dataclass(frozen=True)
class TuiOptions:
    refresh_s: float = 2.0  # how often the dashboard reloads by itself
    follow_poll_s: float = 0.5  # how often a followed audit log is checked for new records


class Terminal(Protocol):
    def hand_over(self, *, app: App[Any], argv: Sequence[str]) -> int:
        """Run `argv` in the real terminal until it exits; return its exit code."""


class SuspendedTerminal:
    """Suspends the app (the screen is restored afterwards) and runs the program in the terminal."""

    def hand_over(self, *, app: App[Any], argv: Sequence[str]) -> int:
        try:
            with app.suspend():
                return subprocess.run(list(argv), check=False).returncode
        except SuspendNotSupported:
            raise AgentboxError("this terminal cannot be handed over to ssh from the TUI",
                                hint=f"run it in another terminal: {shlex.join(argv)}") from None
        except OSError as exc:
            raise AgentboxError(f"could not run {argv[0]}: {exc.strerror}",
                                hint="sudo apt-get install openssh-client") from None
