"""Small modal dialogs: an error with its hint, a yes/no confirm, type-the-name, ask a label;
and DismissOnTop for screens that finish by themselves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Input, Label, Static

from agentbox.errors import AgentboxError
from agentbox.tui.operations import ErrorInfo


class DismissOnTop:
    """For a screen that may finish while another is pushed over it (an approval prompt can
    appear at any moment): dismissing would pop that other screen, so wait until on top."""

    _held_result: tuple[object] | None = None

    def dismiss_on_top(self, result: object) -> None:
        screen = cast(Screen[Any], self)
        if screen.is_active:
            screen.dismiss(result)
        else:
            self._held_result = (result,)

    def on_screen_resume(self) -> None:
        if self._held_result is not None:
            (result,) = self._held_result
            self._held_result = None
            cast(Screen[Any], self).dismiss(result)


class GoesBack:
    """Esc and the Back button dismiss the screen, so whoever opened it hears that it closed
    (a plain pop_screen would not call the callback that reloads the dashboard)."""

    def action_back(self) -> None:
        cast(Screen[Any], self).dismiss(None)


class ErrorScreen(ModalScreen[None]):
    """What went wrong and what to do about it, in the service's own words."""

    BINDINGS = [Binding("escape,enter", "close", "Close")]

    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(classes="dialog-screen")
        self.error = error

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog error-dialog"):
            yield Label(f"✗ {self.error.title}", classes="dialog-title")
            yield Static(self.error.message, id="error-message", markup=False)
            if self.error.hint:
                yield Static(f"What to do: {self.error.hint}", id="error-hint", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK", id="ok", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; y or Enter confirms, n or Esc declines."""

    BINDINGS = [Binding("y", "answer(True)", "Yes", show=False), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, *, title: str, body: str, confirm: str, danger: bool = False) -> None:
        super().__init__(classes="dialog-screen")
        self._title, self._body, self._confirm, self._danger = title, body, confirm, danger

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self._title, classes="dialog-title")
            yield Static(self._body, markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self._confirm} (y)", id="yes", variant="error" if self._danger else "primary")
                yield Button("Cancel (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#yes", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class TypeNameScreen(ModalScreen[bool]):
    """Destroy's confirmation: the button works only once the exact name is typed."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, *, name: str) -> None:
        super().__init__(classes="dialog-screen")
        self._workspace = name  # not `_name`: Textual's own (the widget name)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Destroy {self._workspace}?", classes="dialog-title")
            yield Static(f"Its VM, disks, snapshots, checkpoints and keys are removed for good (the audit log "
                         f"is kept). Type {self._workspace} to confirm.", markup=False)
            yield Input(placeholder=self._workspace, id="confirm-name")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Destroy", id="destroy", variant="error", disabled=True)
                yield Button("Cancel (Esc)", id="cancel")

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_one("#destroy", Button).disabled = event.value != self._workspace

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value == self._workspace:
            self.dismiss(True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "destroy" and self.query_one(Input).value == self._workspace)

    def action_cancel(self) -> None:
        self.dismiss(False)


class AskScreen(ModalScreen[str | None]):
    """Ask for one value, checked live by `validate` (which raises AgentboxError)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, *, title: str, prompt: str, placeholder: str, ok: str,
                 validate: Callable[[str], str]) -> None:
        super().__init__(classes="dialog-screen")
        self._title, self._prompt, self._placeholder, self._ok = title, prompt, placeholder, ok
        self._validate = validate

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self._title, classes="dialog-title")
            yield Static(self._prompt, markup=False)
            yield Input(placeholder=self._placeholder, id="ask-value")
            yield Static("", id="ask-problem", classes="problem", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(self._ok, id="ok", variant="primary", disabled=True)
                yield Button("Cancel (Esc)", id="cancel")

    def _problem(self, value: str) -> str:
        try:
            self._validate(value)
        except AgentboxError as exc:
            return exc.message
        return ""

    def on_input_changed(self, event: Input.Changed) -> None:
        problem = self._problem(event.value) if event.value else ""
        self.query_one("#ask-problem", Static).update(problem)
        self.query_one("#ok", Button).disabled = bool(problem) or not event.value

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value and not self._problem(event.value):
            self.dismiss(event.value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        value = self.query_one(Input).value
        self.dismiss(value if event.button.id == "ok" and not self._problem(value) else None)

    def action_cancel(self) -> None:
        self.dismiss(None)
