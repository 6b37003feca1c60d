"""Widgets that only show data (views.py values) and post messages; none holds a service."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical, VerticalScroll
from textual.widgets import Button, DataTable, DirectoryTree, Input, Static, Tree

from agentbox.model.network import NetworkMode
from agentbox.model.workspace import WorkspaceState
from agentbox.tui.actions import DASHBOARD_ACTIONS, applies
from agentbox.tui.views import NETWORK_MEANING, WorkspaceDetails

# Shape and word, not colour alone, tell the states apart.
STATE_MARKS = {
    WorkspaceState.RUNNING: ("●", "green"),
    WorkspaceState.STOPPED: ("○", "bright_black"),
    WorkspaceState.PAUSED: ("‖", "yellow"),
    WorkspaceState.CREATING: ("…", "cyan"),
    WorkspaceState.BROKEN: ("✗", "red"),
}
# The network mode, likewise: a mark and the word (off is the safe one, open the wide one).
NETWORK_MARKS = {
    NetworkMode.OFF: ("⊘", "green"),
    NetworkMode.ALLOWLIST: ("☰", "yellow"),
    NetworkMode.LEARN: ("◎", "bold magenta"),
    NetworkMode.OPEN: ("◉", "bold red"),
}
BUTTON_PREFIX = "do-"


def state_text(state: WorkspaceState) -> Text:
    mark, style = STATE_MARKS[state]
    return Text(f"{mark} {state.value}", style=style)


def network_text(mode: NetworkMode | str | None, *, meaning: bool = False) -> Text:
    """`☰ allowlist` (with what it means, if asked); `?` when the policy could not be read."""
    try:
        known = NetworkMode(mode) if mode is not None else None
    except ValueError:
        known = None
    if known is None:
        return Text("? unknown")
    mark, style = NETWORK_MARKS[known]
    text = Text()
    text.append(f"{mark} {known.value}", style=style)
    if meaning:
        text.append(f": {NETWORK_MEANING[known]}")
    return text


def details_renderable(details: WorkspaceDetails) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row(Text(details.name, style="bold"), state_text(details.state))
    if details.paused_by:
        grid.add_row("Paused", Text(f"by its {details.paused_by} budget (the session goes on); u resumes it once "
                                    f"no budget is exceeded: {details.resume_hint}", style="yellow"))
    if details.problem:
        grid.add_row("Problem", Text(details.problem, style="red"))
        grid.add_row("", "destroy (d) removes what is left of it")
    if details.ready:
        network = network_text(details.network, meaning=True)
        if details.egress:
            network.append(f"\nreaches now: {details.egress}")
        grid.add_row("Network", network)
        if details.allowlist or details.network is NetworkMode.ALLOWLIST:
            grid.add_row("Allowlist", ", ".join(details.allowlist) or "empty (l to add destinations)")
        grid.add_row("Net log", "\n".join(details.recent_decisions) or "no connections yet")
    grid.add_row("Resources", details.resources)
    grid.add_row("SSH", "\n".join(details.ssh_commands))
    if details.ready:
        grid.add_row("Shares", "\n".join(details.shares) or "none (f to share a folder read-only)")
        grid.add_row("Outbox", details.outbox)
    grid.add_row("Clean state", details.clean_state)
    grid.add_row("Session", details.session)
    if details.budgets:
        grid.add_row("Budgets", "\n".join(details.budgets))
    grid.add_row("Checkpoints", ", ".join(details.checkpoints) or "none")
    grid.add_row("Recent", "\n".join(details.recent_events) or "nothing logged yet")
    return grid


class WorkspaceTable(DataTable[str | Text]):
    """Enter opens the selected workspace's agent terminal (its shell, for a plain VM); a mouse
    click only selects (a stray second click must not take over the terminal)."""

    BINDINGS = [Binding("enter", "screen.open", "Open", show=False)]


class DetailsPanel(VerticalScroll):
    """The selected workspace's details and the buttons for what can be done with it."""

    def compose(self) -> ComposeResult:
        yield Static("Select a workspace to see its details.", id="details-text")
        with Grid(id="action-buttons"):
            for spec in DASHBOARD_ACTIONS:
                if spec.button:
                    yield Button(f"{spec.label} ({spec.key_text})", id=f"{BUTTON_PREFIX}{spec.action}", compact=True)

    def show(self, details: WorkspaceDetails | None) -> None:
        text = self.query_one("#details-text", Static)
        text.update(details_renderable(details) if details else "Select a workspace to see its details.")
        for spec in DASHBOARD_ACTIONS:
            if spec.button:
                self.query_one(f"#{BUTTON_PREFIX}{spec.action}", Button).display = applies(spec, details)


class FolderTree(DirectoryTree):
    """Folders only (no files, nothing hidden), under a root shown by a short label."""

    def __init__(self, path: Path, *, label: str, id: str | None = None) -> None:
        self._root_label = label
        super().__init__(path, id=id)

    async def watch_path(self) -> None:
        await super().watch_path()
        self.root.set_label(self._root_label)  # not the full path: shorter, and the same on every machine

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        return [p for p in paths if not p.name.startswith(".") and self._safe_is_dir(p)]


class FolderPicker(Vertical):
    """Pick a folder: browse the tree (the highlighted folder fills the field) or type a path."""

    def __init__(self, *, root: Path, placeholder: str, value: str = "", id: str | None = None) -> None:
        super().__init__(id=id, classes="folder-picker")
        self._root, self._placeholder, self._value = root, placeholder, value

    def compose(self) -> ComposeResult:
        label = "~ (your home folder)" if self._root == Path.home() else str(self._root)
        yield FolderTree(self._root, label=label, id=f"{self.id}-tree")
        yield Input(self._value, placeholder=self._placeholder, id=f"{self.id}-path")

    @property
    def value(self) -> str:
        return self.query_one(Input).value.strip()

    @property
    def path_input(self) -> Input:
        return self.query_one(Input)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:  # type: ignore[type-arg]
        node = event.node
        if node.parent is not None and node.data is not None:  # the root stays as typed
            self.query_one(Input).value = str(node.data.path)
