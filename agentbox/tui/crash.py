"""The TUI's one boundary for errors nobody expected.

Whatever a handler or a worker lets out ends here: its traceback goes to the error log
(a full-screen app cannot print it) and a screen says what happened and where to look. An
AgentboxError that got this far is still an ordinary error: shown with its hint, no log.
A failed worker leaves the app usable, so its screen can be dismissed; a failed handler
has stopped its screen's message loop, so the only safe way on is to quit.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from agentbox.services.crash_log import CrashLog


class UnexpectedError(Message):
    """Posted to the app by a thread of its own (not a Textual worker) that failed."""

    def __init__(self, error: BaseException, *, where: str) -> None:
        super().__init__()
        self.error = error
        self.where = where


def describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def write_log(*, log: CrashLog, error: BaseException, where: str) -> str:
    """The sentence that says where the traceback went (or why it could not go there)."""
    try:
        return f"The traceback is in {log.write(error=error, where=where)}"
    except OSError as exc:
        return f"The traceback could not be written to {log.path}: {exc.strerror or exc}"


class CrashScreen(ModalScreen[None]):
    def __init__(self, *, error: BaseException, where: str, logged: str, recoverable: bool) -> None:
        super().__init__(classes="dialog-screen")
        self.error = error
        self.where = where
        self.logged = logged
        self.recoverable = recoverable

    BINDINGS = [Binding("q", "quit", "Quit"), Binding("escape,enter", "close", "Close", show=False)]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog error-dialog"):
            yield Label("✗ agentbox hit an error it did not expect", classes="dialog-title")
            yield Static(f"{self.where}: {describe(self.error)}", id="crash-message", markup=False)
            yield Static(self.logged, id="crash-log", markup=False)
            yield Static("This is a bug in agentbox: please report it with that traceback. "
                         + ("Esc goes back to what you were doing; q quits." if self.recoverable
                            else "This screen cannot carry on safely: q quits."), id="crash-hint", markup=False)
            with Horizontal(classes="dialog-buttons"):
                if self.recoverable:
                    yield Button("Back (Esc)", id="back", variant="primary")
                yield Button("Quit (q)", id="quit", variant="default" if self.recoverable else "error")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "back":
            self.dismiss(None)
        else:
            self.action_quit()

    def action_quit(self) -> None:
        self.app.exit(return_code=1)

    def action_close(self) -> None:
        if self.recoverable:
            self.dismiss(None)
