"""Before a folder is shared: the likely secrets its scan found (file and rule, never the
secret), and the user's choice: leave those files out, share them anyway, or do not share."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from agentbox.model.secret_rules import SecretScan
from agentbox.model.shares import SecretChoice


class SecretsScreen(ModalScreen[SecretChoice | None]):
    BINDINGS = [Binding("e", "choose('exclude')", "Leave them out"),
                Binding("s", "choose('allow')", "Share anyway", show=False),
                Binding("escape", "choose('')", "Do not share")]

    def __init__(self, *, source: str, scan: SecretScan) -> None:
        super().__init__(classes="dialog-screen")
        self._source, self._scan = source, scan

    def compose(self) -> ComposeResult:
        scan = self._scan
        with Vertical(classes="dialog"):
            yield Label(f"{len(scan.findings)} likely secret(s) in {self._source}", classes="dialog-title",
                        markup=False)
            with VerticalScroll(id="secret-findings"):
                for finding in scan.findings:
                    yield Static(f"• {finding.path}: {finding.rule}", markup=False)
            yield Static("Leaving them out shares a copy made now, without those files (later changes on the "
                         "host do not show). Sharing anyway lets the agent read them.", markup=False, classes="hint")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Leave them out (e)", id="exclude", variant="primary", compact=True)
                yield Button("Share anyway (s)", id="allow", variant="error", compact=True)
                yield Button("Do not share (Esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#exclude", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_choose(event.button.id if event.button.id in ("exclude", "allow") else "")

    def action_choose(self, choice: str) -> None:
        self.dismiss(SecretChoice(choice) if choice else None)
