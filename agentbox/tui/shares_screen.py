"""Folders shared read-only into a workspace: list, add (picked in a directory tree, with a
tag and how read-only is enforced) and remove."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Select, Static

from agentbox.bootstrap import Services
from agentbox.errors import AgentboxError
from agentbox.model.secret_rules import SecretScan
from agentbox.model.shares import MechanismChoice, SecretChoice
from agentbox.services.share_paths import default_tag, validate_tag
from agentbox.services.shares import ShareStatus
from agentbox.tui import operations
from agentbox.tui.dialogs import ConfirmScreen, GoesBack
from agentbox.tui.messages import MechanismsLoaded, SharesLoaded
from agentbox.tui.operation_screen import RunsOperations
from agentbox.tui.operations import error_info
from agentbox.tui.secrets_screen import SecretsScreen
from agentbox.tui.views import home_relative, share_place
from agentbox.tui.widgets import FolderPicker

AUTO = "auto"


@dataclass(frozen=True)
class ShareChoice:
    source: str
    tag: str
    mechanism: str | None  # None: the best this host offers


def check_share_folder(*, services: Services, source: str) -> Path:
    """The service's own check of a folder (InvalidInput says why it may not be shared)."""
    return services.shares.check_source(source=source)


def mechanism_about(choice: MechanismChoice) -> str:
    live = ("live: changes on the host show in the workspace" if choice.mechanism.live
            else "a copy made now: later changes on the host do not show")
    return f"{choice.mechanism.value}: {choice.reason}; {live}"


def secrets_cell(status: ShareStatus) -> str:
    share = status.share
    words = [f"{len(share.excluded)} left out"] if share.excluded else [f"{len(share.secrets)} allowed"] \
        if share.secrets else []
    if status.new_secrets:
        words.append(f"⚠ {len(status.new_secrets)} new")
    return ", ".join(words) or "none found"


class AddShareScreen(ModalScreen[ShareChoice | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, *, services: Services, name: str, taken: frozenset[str]) -> None:
        super().__init__(classes="dialog-screen")
        self._services = services
        self.workspace = name
        self._taken = taken
        self._choices: dict[str, MechanismChoice] = {}
        self._auto_tag = ""

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wide-dialog"):
            yield Label(f"Share a folder with {self.workspace}, read-only", classes="dialog-title")
            yield Static("Pick it in the tree or type its path. The agent reads it at /mnt/shares/TAG and can "
                         "never change it.", classes="hint", markup=False)
            yield FolderPicker(root=Path.home(), placeholder="/path/to/the/project", id="share-folder")
            tag = Input(placeholder="the folder's name", id="tag")
            tag.border_title = "Tag (its name in the workspace)"
            yield tag
            yield Static("", id="tag-problem", classes="problem", markup=False)
            yield Select[str]([], prompt="How read-only is enforced", id="mechanism", allow_blank=True)
            yield Static("checking what this host can do…", id="mechanism-about", classes="hint", markup=False)
            yield Static("", id="share-problem", classes="problem", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Share (Enter)", id="share", variant="primary")
                yield Button("Cancel (Esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#share-folder-tree").focus()
        self._load(self._services)

    @work(thread=True)
    def _load(self, services: Services) -> None:
        try:
            self.post_message(MechanismsLoaded(services.shares.mechanisms()))
        except AgentboxError as exc:  # shown in the dialog
            self.post_message(MechanismsLoaded((), error=error_info(title="share mechanisms", exc=exc)))

    def on_mechanisms_loaded(self, message: MechanismsLoaded) -> None:
        about = self.query_one("#mechanism-about", Static)
        usable = [c for c in message.choices if c.available]
        if message.error or not usable:
            about.update(f"✗ {message.error.message}" if message.error else
                         "✗ this host has no way to share a folder read-only (agentbox doctor says what to install)")
            return
        self._choices = {c.mechanism.value: c for c in usable}
        self._choices[AUTO] = usable[0]
        select = self.query_one("#mechanism", Select)
        select.set_options([(f"automatic: {usable[0].mechanism.value}", AUTO)]
                           + [(c.mechanism.value, c.mechanism.value) for c in usable])
        select.value = AUTO

    def on_select_changed(self, event: Select.Changed) -> None:
        choice = self._choices.get(event.value) if isinstance(event.value, str) else None
        self.query_one("#mechanism-about", Static).update(mechanism_about(choice) if choice else "")

    def on_input_changed(self, event: Input.Changed) -> None:
        tag = self.query_one("#tag", Input)
        if event.input.id == "share-folder-path":
            self.query_one("#share-problem", Static).update("")  # a new folder: the last refusal is moot
            if event.value.strip() and tag.value in ("", self._auto_tag):
                self._auto_tag = default_tag(Path(event.value.strip()))  # follows the folder until typed over
                tag.value = self._auto_tag
        else:
            self.query_one("#tag-problem", Static).update(self._tag_problem(tag.value) if tag.value else "")

    def _tag_problem(self, tag: str) -> str:
        try:
            validate_tag(tag)
        except AgentboxError as exc:
            return f"✗ {exc.message}"
        return f"✗ {self.workspace} already has a share {tag}" if tag in self._taken else ""

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "share":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _submit(self) -> None:
        problem = self.query_one("#share-problem", Static)
        source = self.query_one(FolderPicker).value
        tag = self.query_one("#tag", Input).value.strip() or (default_tag(Path(source)) if source else "")
        if not source:
            problem.update("✗ pick a folder in the tree, or type its path")
            return
        try:
            check_share_folder(services=self._services, source=source)
        except AgentboxError as exc:
            problem.update(f"✗ {exc.message}" + (f"\nWhat to do: {exc.hint}" if exc.hint else ""))
            return
        if tag_problem := self._tag_problem(tag):
            self.query_one("#tag-problem", Static).update(tag_problem)
            return
        value = self.query_one("#mechanism", Select).value
        mechanism = value if isinstance(value, str) and value != AUTO else None
        self.dismiss(ShareChoice(source=source, tag=tag, mechanism=mechanism))


class SharesScreen(RunsOperations, GoesBack, Screen[None]):
    BINDINGS = [
        Binding("a", "add", "Add"),
        Binding("d,delete", "remove", "Remove"),
        Binding("escape", "back", "Back"),
        Binding("f5", "reload", "Refresh", show=False),
    ]

    def __init__(self, *, services: Services, name: str) -> None:
        super().__init__()
        self._services = services
        self.workspace = name
        self._tags: tuple[str, ...] = ()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"Shares of {self.workspace}: host folders its agent can read at /mnt/shares/TAG, never "
                     "change", classes="screen-title", markup=False)
        yield DataTable(id="shares", cursor_type="row", zebra_stripes=True)
        yield Static("loading…", id="shares-empty", classes="hint", markup=False)
        with Horizontal(classes="button-row"):
            yield Button("Add (a)", id="add", compact=True)
            yield Button("Remove (d)", id="remove", compact=True)
            yield Button("Back (Esc)", id="back", compact=True)
        yield Static("", id="status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("tag", "host folder", "in the workspace", "enforced by", "kind",
                                              "attached", "read-only proof", "secrets")
        self.action_reload()

    def action_reload(self) -> None:
        self._load(self._services)

    @work(thread=True, exclusive=True, group="shares")
    def _load(self, services: Services) -> None:
        try:
            self.post_message(SharesLoaded(services.shares.list(name=self.workspace)))
        except AgentboxError as exc:  # shown on the screen
            self.post_message(SharesLoaded(None, error=error_info(title="shares", exc=exc)))

    def on_shares_loaded(self, message: SharesLoaded) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for status in message.shares:
            share = status.share
            proof = status.proof
            table.add_row(share.tag, home_relative(share.source), share_place(share.tag), share.mechanism.value,
                          "live" if status.live else "copy", "yes" if status.attached else "no",
                          (f"✓ write refused {proof.time}" if proof.refused else f"✗ WRITABLE {proof.time}")
                          if proof else "not yet", secrets_cell(status), key=share.tag)
        self._tags = tuple(s.share.tag for s in message.shares)
        empty = self.query_one("#shares-empty", Static)
        warnings = [f"⚠ {s.share.tag}: {len(s.new_secrets)} likely secret(s) found since it was shared, visible "
                    f"in the workspace: {'; '.join(s.new_secrets)} (remove it and share it again, leaving them out)"
                    for s in message.shares if s.new_secrets]
        if message.error:
            empty.update(f"✗ {message.error.message}")
        else:
            empty.update("\n".join(warnings) if warnings else "" if self._tags
                         else "No shared folders yet: press a to share one, read-only.")
        self.query_one("#remove", Button).disabled = not self._tags
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "remove":
            return bool(self._tags) or None
        return True

    def action_add(self) -> None:
        def chosen(choice: ShareChoice | None) -> None:
            if choice is not None:
                self.query_one("#status", Static).update(f"looking through {choice.source} for likely secrets…")
                self._scan(self._services, choice)

        self.app.push_screen(AddShareScreen(services=self._services, name=self.workspace,
                                            taken=frozenset(self._tags)), chosen)

    @work(thread=True, exclusive=True, group="share-scan")
    def _scan(self, services: Services, choice: ShareChoice) -> None:
        try:
            scan = services.shares.scan(source=choice.source)
        except AgentboxError as exc:
            self.app.call_from_thread(self.query_one("#status", Static).update, f"✗ {exc.message}")
            return
        self.app.call_from_thread(self._scanned, choice, scan)

    def _scanned(self, choice: ShareChoice, scan: SecretScan) -> None:
        """Share at once when nothing was found; else the user decides what happens to the findings."""
        self.query_one("#status", Static).update("")

        def share(secrets: SecretChoice | None) -> None:
            self.run_operation(operations.add_share(services=self._services, name=self.workspace,
                                                    source=choice.source, tag=choice.tag,
                                                    mechanism=choice.mechanism, secrets=secrets))

        if not scan.findings and scan.complete:
            share(None)
        else:
            self.app.push_screen(SecretsScreen(source=choice.source, scan=scan),
                                 lambda secrets: share(secrets) if secrets is not None else None)

    def action_remove(self) -> None:
        table = self.query_one(DataTable)
        if not self._tags or table.cursor_row < 0:
            return
        tag = self._tags[min(table.cursor_row, len(self._tags) - 1)]
        self.app.push_screen(ConfirmScreen(
            title=f"Stop sharing {tag} with {self.workspace}?",
            body=f"The folder itself is not touched; the workspace no longer sees {share_place(tag)}.",
            confirm="Remove"),
            lambda yes: self.run_operation(operations.remove_share(services=self._services, name=self.workspace,
                                                                   tag=tag))
            if yes else None)
