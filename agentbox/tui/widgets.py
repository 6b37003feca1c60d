"""Widgets that only show data (views.py values) and post messages; none holds a service."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, VerticalScroll
from textual.widgets import Button, DataTable, Static

from agentbox.model.workspace import WorkspaceState
from agentbox.tui.actions import DASHBOARD_ACTIONS, applies
from agentbox.tui.views import WorkspaceDetails

# Shape and word, not colour alone, tell the states apart.
STATE_MARKS = {
    WorkspaceState.RUNNING: ("●", "green"),
    WorkspaceState.STOPPED: ("○", "bright_black"),
    WorkspaceState.PAUSED: ("‖", "yellow"),
    WorkspaceState.CREATING: ("…", "cyan"),
    WorkspaceState.BROKEN: ("✗", "red"),
}
BUTTON_PREFIX = "do-"


def state_text(state: WorkspaceState) -> Text:
    mark, style = STATE_MARKS[state]
    return Text(f"{mark} {state.value}", style=style)


def details_renderable(details: WorkspaceDetails) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row(Text(details.name, style="bold"), state_text(details.state))
    if details.problem:
        grid.add_row("Problem", Text(details.problem, style="red"))
        grid.add_row("", "destroy (d) removes what is left of it")
    grid.add_row("Resources", details.resources)
    grid.add_row("SSH", "\n".join(details.ssh_commands))
    grid.add_row("Clean state", details.clean_state)
    grid.add_row("Session", details.session)
    grid.add_row("Checkpoints", ", ".join(details.checkpoints) or "none")
    grid.add_row("Recent", "\n".join(details.recent_events) or "nothing logged yet")
    return grid


class WorkspaceTable(DataTable):
    """Enter opens the selected workspace's shell; a mouse click only selects (a stray second
    click must not take over the terminal)."""

    BINDINGS = [Binding("enter", "screen.shell", "Shell", show=False)]


class DetailsPanel(VerticalScroll):
    """The selected workspace's details and the buttons for what can be done with it."""

    def compose(self) -> ComposeResult:
        yield Static("Select a workspace to see its details.", id="details-text")
        with Grid(id="action-buttons"):
            for spec in DASHBOARD_ACTIONS:
                if spec.button:
                    yield Button(f"{spec.label} ({spec.key})", id=f"{BUTTON_PREFIX}{spec.action}", compact=True)

    def show(self, details: WorkspaceDetails | None) -> None:
        text = self.query_one("#details-text", Static)
        text.update(details_renderable(details) if details else "Select a workspace to see its details.")
        for spec in DASHBOARD_ACTIONS:
            if spec.button:
                self.query_one(f"#{BUTTON_PREFIX}{spec.action}", Button).display = applies(spec, details)
