"""A workspace's panic evidence (services/panic.py): list it, restore one as a new
network-off workspace for inspection (`agentbox evidence NAME --restore ID --as NEW`), remove one."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Static

from agentbox.bootstrap import Services
from agentbox.errors import AlreadyExists, AgentboxError
from agentbox.model.evidence import Evidence
from agentbox.model.names import validate_workspace_name
from agentbox.tui import operations
from agentbox.tui.dialogs import AskScreen, ConfirmScreen, GoesBack
from agentbox.tui.messages import EvidenceLoaded
from agentbox.tui.operation_screen import RunsOperations
from agentbox.tui.operations import error_info
from agentbox.tui.views import short_time, size_text


class EvidenceScreen(RunsOperations, GoesBack, Screen[None]):
    BINDINGS = [
        Binding("r", "restore", "Restore as"),
        Binding("d", "delete", "Remove"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, *, services: Services, name: str, taken: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self._services = services
        self.workspace = name
        self._taken = taken | {name}  # names a restore cannot use (as the wizard checks a new name)
        self._kept: tuple[Evidence, ...] = ()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"Evidence of {self.workspace}: what each panic kept (RAM as an ELF core for crash or gdb, "
                     "and a copy of the disk). A restore boots the disk copy as a new workspace, network off for "
                     "good; the evidence itself is only read.", classes="screen-title", markup=False)
        yield DataTable(id="evidence", cursor_type="row", zebra_stripes=True)
        yield Static("loading…", id="evidence-empty", classes="hint")
        with Horizontal(classes="button-row"):
            yield Button("Restore as (r)", id="restore", compact=True)
            yield Button("Remove (d)", id="delete", compact=True)
            yield Button("Back (Esc)", id="back", compact=True)
        yield Static("", id="status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("id", "taken", "RAM", "disk", "cut", "note")
        self.action_reload()

    def action_reload(self) -> None:
        self._load(self._services)

    @work(thread=True, exclusive=True, group="evidence")
    def _load(self, services: Services) -> None:
        try:
            kept = services.panic.evidence(name=self.workspace)
        except AgentboxError as exc:  # shown on the screen
            self.post_message(EvidenceLoaded(None, error=error_info(title="evidence", exc=exc)))
        else:
            self.post_message(EvidenceLoaded(kept))

    def on_evidence_loaded(self, message: EvidenceLoaded) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for e in message.evidence:
            table.add_row(e.id, short_time(e.taken), size_text(e.memory.bytes) if e.memory else "-",
                          size_text(e.disk.bytes) if e.disk else "-", str(e.network_cut), e.problem, key=e.id)
        self._kept = message.evidence
        empty = self.query_one("#evidence-empty", Static)
        if message.error:
            empty.update(f"✗ {message.error.message}")
        else:
            empty.update("" if self._kept else f"No evidence: the panic key (!) keeps what {self.workspace} holds.")
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("restore", "delete"):
            return bool(self._kept) or None  # shown greyed out while there is nothing to act on
        return True

    # -- actions -------------------------------------------------------------------------

    def _current(self) -> Evidence | None:
        table = self.query_one(DataTable)
        if not self._kept or table.cursor_row < 0:
            return None
        return self._kept[min(table.cursor_row, len(self._kept) - 1)]

    def _new_name(self, value: str) -> str:
        name = validate_workspace_name(value)
        if name in self._taken:
            raise AlreadyExists(f"a workspace named {name} already exists")
        return name

    def action_restore(self) -> None:
        evidence = self._current()
        if evidence is None:
            return

        def chosen(as_name: str | None) -> None:
            if as_name:
                self._taken = self._taken | {as_name}
                self.run_operation(operations.restore_evidence(services=self._services, name=self.workspace,
                                                               evidence_id=evidence.id, as_name=as_name))

        self.app.push_screen(AskScreen(
            title=f"Restore evidence {evidence.id} of {self.workspace}",
            prompt="The name of the new workspace (network off for good, no shares):",
            placeholder=f"{self.workspace}-inspect", ok="Restore", validate=self._new_name), chosen)

    def action_delete(self) -> None:
        evidence = self._current()
        if evidence is None:
            return
        self.app.push_screen(ConfirmScreen(
            title=f"Remove evidence {evidence.id}?",
            body="Its RAM and disk files are deleted for good (the audit log keeps their hashes).",
            confirm="Remove", danger=True),
            lambda yes: self.run_operation(operations.remove_evidence(
                services=self._services, name=self.workspace, evidence_id=evidence.id)) if yes else None)
