"""A workspace's named checkpoints: list, save a new one, restore one, delete one."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Static

from agentbox.bootstrap import Services
from agentbox.errors import AgentboxError
from agentbox.model.names import validate_label
from agentbox.tui import operations
from agentbox.tui.dialogs import AskScreen, ConfirmScreen, GoesBack
from agentbox.tui.messages import CheckpointsLoaded
from agentbox.tui.operation_screen import RunsOperations
from agentbox.tui.operations import error_info
from agentbox.tui.views import short_time


class CheckpointsScreen(RunsOperations, GoesBack, Screen[None]):
    BINDINGS = [
        Binding("c", "create", "Save new"),
        Binding("r", "restore", "Restore"),
        Binding("d", "delete", "Delete"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, *, services: Services, name: str) -> None:
        super().__init__()
        self._services = services
        self.workspace = name
        self._labels: tuple[str, ...] = ()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"Checkpoints of {self.workspace}: saved states you can go back to (a reset goes back to "
                     "the clean state instead)", classes="screen-title", markup=False)
        yield DataTable(id="checkpoints", cursor_type="row", zebra_stripes=True)
        yield Static("loading…", id="checkpoints-empty", classes="hint")
        with Horizontal(classes="button-row"):
            yield Button("Save new (c)", id="create", compact=True)
            yield Button("Restore (r)", id="restore", compact=True)
            yield Button("Delete (d)", id="delete", compact=True)
            yield Button("Back (Esc)", id="back", compact=True)
        yield Static("", id="status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("label", "saved", "contents")
        self.action_reload()

    def action_reload(self) -> None:
        self._load(self._services)

    @work(thread=True, exclusive=True, group="checkpoints")
    def _load(self, services: Services) -> None:
        try:
            found = services.snapshots.checkpoints(name=self.workspace)
        except AgentboxError as exc:  # shown on the screen
            self.post_message(CheckpointsLoaded(None, error=error_info(title="checkpoints", exc=exc)))
        else:
            self.post_message(CheckpointsLoaded(found))

    def on_checkpoints_loaded(self, message: CheckpointsLoaded) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for cp in message.checkpoints:
            table.add_row(cp.label, short_time(cp.created), "disk and RAM" if cp.with_memory else "disk only",
                          key=cp.label)
        self._labels = tuple(cp.label for cp in message.checkpoints)
        empty = self.query_one("#checkpoints-empty", Static)
        if message.error:
            empty.update(f"✗ {message.error.message}")
        else:
            empty.update("" if self._labels else "No checkpoints yet: press c to save the current state.")
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("restore", "delete"):
            return bool(self._labels) or None  # shown greyed out while there is nothing to act on
        return True

    # -- actions -------------------------------------------------------------------------

    def _current(self) -> str | None:
        table = self.query_one(DataTable)
        if not self._labels or table.cursor_row < 0:
            return None
        return self._labels[min(table.cursor_row, len(self._labels) - 1)]

    def action_create(self) -> None:
        def chosen(label: str | None) -> None:
            if label:
                self.run_operation(operations.checkpoint(services=self._services, name=self.workspace, label=label))

        self.app.push_screen(AskScreen(
            title=f"Save a checkpoint of {self.workspace}", prompt="A label for the current state:",
            placeholder="before-upgrade", ok="Save", validate=lambda v: validate_label(v, what="checkpoint label")),
            chosen)

    def action_restore(self) -> None:
        label = self._current()
        if label is None:
            return
        self.app.push_screen(ConfirmScreen(
            title=f"Restore {self.workspace} to {label}?",
            body="Everything since that checkpoint is lost: files, processes, installed packages.",
            confirm="Restore", danger=True),
            lambda yes: self.run_operation(operations.restore(services=self._services, name=self.workspace,
                                                              label=label))
            if yes else None)

    def action_delete(self) -> None:
        label = self._current()
        if label is None:
            return
        self.app.push_screen(ConfirmScreen(
            title=f"Delete checkpoint {label}?", body="The workspace itself is not changed.", confirm="Delete",
            danger=True),
            lambda yes: self.run_operation(operations.delete_checkpoint(services=self._services, name=self.workspace,
                                                               label=label)) if yes else None)
