"""A workspace's outbox: what its agent left in /mnt/outbox. List it, export its regular files
into a folder the user picks or types, and clear it (after a confirm)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Static

from agentbox.bootstrap import Services
from agentbox.errors import AgentboxError
from agentbox.services.shares import GUEST_OUTBOX
from agentbox.tui import operations
from agentbox.tui.dialogs import ConfirmScreen, GoesBack
from agentbox.tui.messages import OutboxLoaded
from agentbox.tui.operation_screen import RunsOperations
from agentbox.tui.operations import error_info
from agentbox.tui.views import outbox_text, outbox_usage_text, size_text
from agentbox.tui.widgets import FolderPicker


class ExportScreen(ModalScreen[Path | None]):
    """Where to export: picked in the tree or typed (made if it does not exist yet)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, *, name: str) -> None:
        super().__init__(classes="dialog-screen")
        self.workspace = name

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wide-dialog"):
            yield Label(f"Export the outbox of {self.workspace}", classes="dialog-title")
            yield Static("Its regular files are copied into this folder (made if missing); links, devices and "
                         "the like are skipped, and so is any name the folder already has.", classes="hint",
                         markup=False)
            yield FolderPicker(root=Path.home(), placeholder="/path/to/a/folder",
                               value=str(Path.home() / f"{self.workspace}-outbox"), id="export-folder")
            yield Static("", id="export-problem", classes="problem", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Export (Enter)", id="export", variant="primary")
                yield Button("Cancel (Esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one(FolderPicker).path_input.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "export":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _submit(self) -> None:
        value = self.query_one(FolderPicker).value
        if not value:
            self.query_one("#export-problem", Static).update("✗ pick a folder in the tree, or type its path")
            return
        self.dismiss(Path(value))  # the service refuses what is not a folder, and says why


class OutboxScreen(RunsOperations, GoesBack, Screen[None]):
    BINDINGS = [
        Binding("e", "export", "Export"),
        Binding("c", "clear", "Clear"),
        Binding("f5", "reload", "Refresh"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, *, services: Services, name: str) -> None:
        super().__init__()
        self._services = services
        self.workspace = name
        self._count = 0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"Outbox of {self.workspace}: what its agent left in {GUEST_OUTBOX} (untrusted; only "
                     "regular files are exported)", classes="screen-title", markup=False)
        yield Static("", id="outbox-usage", classes="hint", markup=False)
        yield DataTable(id="outbox", cursor_type="row", zebra_stripes=True)
        yield Static("loading…", id="outbox-summary", classes="hint", markup=False)
        with Horizontal(classes="button-row"):
            yield Button("Export (e)", id="export", compact=True)
            yield Button("Clear (c)", id="clear", compact=True)
            yield Button("Refresh (F5)", id="reload", compact=True)
            yield Button("Back (Esc)", id="back", compact=True)
        yield Static("", id="status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("path", "kind", "size", "modified (UTC)")
        self.action_reload()

    def action_reload(self) -> None:
        self._load(self._services)

    @work(thread=True, exclusive=True, group="outbox")
    def _load(self, services: Services) -> None:
        try:
            entries = services.outbox.list(name=self.workspace)
            self.post_message(OutboxLoaded(entries, usage=services.outbox.usage(name=self.workspace)))
        except AgentboxError as exc:  # shown on the screen
            self.post_message(OutboxLoaded(None, error=error_info(title="outbox", exc=exc)))

    def on_outbox_loaded(self, message: OutboxLoaded) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for entry in message.entries:
            modified = datetime.fromtimestamp(entry.modified, UTC).strftime("%Y-%m-%d %H:%M")
            table.add_row(entry.path, entry.kind, size_text(entry.size) if entry.kind == "file" else "", modified)
        self._count = len(message.entries)
        summary = self.query_one("#outbox-summary", Static)
        self.query_one("#outbox-usage", Static).update(outbox_usage_text(message.usage) if message.usage else "")
        if message.error:
            summary.update(f"✗ {message.error.message}")
        elif message.entries:
            summary.update(outbox_text(message.entries))
        else:
            summary.update(f"The outbox is empty: the agent writes its results to {GUEST_OUTBOX}.")
        for button in ("#export", "#clear"):
            self.query_one(button, Button).disabled = not self._count
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("export", "clear"):
            return bool(self._count) or None
        return True

    def action_export(self) -> None:
        def chosen(dest: Path | None) -> None:
            if dest is not None:
                self.run_operation(operations.export_outbox(services=self._services, name=self.workspace, dest=dest))

        self.app.push_screen(ExportScreen(name=self.workspace), chosen)

    def action_clear(self) -> None:
        self.app.push_screen(ConfirmScreen(
            title=f"Empty the outbox of {self.workspace}?",
            body=f"Everything in it is deleted ({self._count} item(s)); export first what you want to keep.",
            confirm="Clear", danger=True),
            lambda yes: self.run_operation(operations.clear_outbox(services=self._services, name=self.workspace))
            if yes else None)
