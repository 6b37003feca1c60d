"""Small modal dialogs: an error with its hint, a yes/no confirm, type-the-name, ask a label."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from agentbox.errors import AgentboxError
from agentbox.tui.operations import ErrorInfo


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
        self._name = name

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Destroy {self._name}?", classes="dialog-title")
            yield Static(f"Its VM, disks, snapshots, checkpoints and keys are removed for good (the audit log "
                         f"is kept). Type {self._name} to confirm.", markup=False)
            yield Input(placeholder=self._name, id="confirm-name")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Destroy", id="destroy", variant="error", disabled=True)
                yield Button("Cancel (Esc)", id="cancel")

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_one("#destroy", Button).disabled = event.value != self._name

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value == self._name:
            self.dismiss(True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "destroy" and self.query_one(Input).value == self._name)

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
