"""The wizard's key step: an agent's provider has no API key stored yet, so ask for it
(masked), store it on the host through the same key store `agentbox key set` uses, or skip
(the workspace is made anyway; the agent's requests then get the gateway's clear 401).

The key is never shown, logged or kept on the screen after it is stored: the input is a
password field, cleared once the store has it, and errors name the provider only.
"""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from agentbox.bootstrap import Services
from agentbox.errors import AgentboxError

EXPLANATION = ("The key stays on this computer: the VM only ever gets a per-session token "
               "that agentbox's gateway swaps for it.")


class KeyScreen(ModalScreen[bool]):
    """Dismissed with True once the key is stored, False when skipped."""

    BINDINGS = [Binding("escape", "skip", "Skip")]

    def __init__(self, *, services: Services, provider: str, agent: str) -> None:
        super().__init__(classes="dialog-screen")
        self._services = services
        self._provider = provider
        self._agent = agent

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog key-dialog"):
            yield Label(f"{self._agent} needs an API key for {self._provider}", classes="dialog-title")
            yield Static(EXPLANATION, id="key-about", classes="hint", markup=False)
            key = Input(password=True, placeholder="paste the key (not shown)", id="api-key")
            key.border_title = f"{self._provider} API key"
            yield key
            yield Static("", id="key-problem", classes="problem", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Store key (Enter)", id="store", variant="primary")
                yield Button("Skip (Esc)", id="skip")

    def on_mount(self) -> None:
        self.query_one("#api-key", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._store()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "store":
            self._store()
        else:
            self.action_skip()

    def action_skip(self) -> None:
        self.query_one("#api-key", Input).value = ""
        self.dismiss(False)

    def _store(self) -> None:
        raw = self.query_one("#api-key", Input).value
        if not raw.strip():
            self.query_one("#key-problem", Static).update("✗ paste the key first, or skip (Esc)")
            return
        self.query_one("#store", Button).disabled = True
        self._save(self._services, raw)

    @work(thread=True, exclusive=True, group="key-store")
    def _save(self, services: Services, raw: str) -> None:
        # A desktop keyring may take a moment (or ask to unlock): off the UI thread.
        try:
            services.keys.set(provider=self._provider, key=raw)
        except AgentboxError as exc:
            self.app.call_from_thread(self._refused, exc)
            return
        self.app.call_from_thread(self._stored)

    def _refused(self, exc: AgentboxError) -> None:
        self.query_one("#store", Button).disabled = False
        self.query_one("#key-problem", Static).update(
            f"✗ {exc.message}" + (f"\nWhat to do: {exc.hint}" if exc.hint else ""))

    def _stored(self) -> None:
        self.query_one("#api-key", Input).value = ""
        self.dismiss(True)
