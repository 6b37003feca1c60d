"""Shown when the hypervisor cannot be reached (typically the first run): what failed and
exactly what to do, from `agentbox doctor`'s checks. Retry goes back to the dashboard."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Static

from agentbox.bootstrap import Services
from agentbox.errors import AgentboxError
from agentbox.services.doctor import CheckStatus, DoctorReport
from agentbox.tui.dialogs import DismissOnTop
from agentbox.tui.messages import DoctorDone
from agentbox.tui.operations import ErrorInfo, error_info

MARKS = {CheckStatus.OK: ("✓ ok", "green"), CheckStatus.WARN: ("! warn", "yellow"),
         CheckStatus.FAIL: ("✗ FAIL", "bold red")}


def report_renderable(report: DoctorReport) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    # Failures first: they are what stands between the user and a workspace.
    order = {CheckStatus.FAIL: 0, CheckStatus.WARN: 1, CheckStatus.OK: 2}
    for check in sorted(report.checks, key=lambda c: order[c.status]):
        mark, style = MARKS[check.status]
        body = Text(check.detail)
        if check.hint and check.status is not CheckStatus.OK:
            body.append(f"\n→ {check.hint}", style="italic")
        grid.add_row(Text(mark, style=style), check.name, body)
    return grid


class DoctorScreen(DismissOnTop, Screen[bool]):
    """Dismissed with True to retry."""

    BINDINGS = [Binding("r", "retry", "Retry"), Binding("q", "app.quit", "Quit")]

    def __init__(self, *, services: Services, error: ErrorInfo) -> None:
        super().__init__()
        self._services = services
        self.error = error

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="doctor"):
            yield Static("agentbox cannot reach the hypervisor (libvirt)", classes="dialog-title")
            yield Static(self.error.message, id="doctor-error", markup=False)
            if self.error.hint:
                yield Static(f"What to do: {self.error.hint}", id="doctor-hint", markup=False)
            yield Static("Checking this machine…", id="doctor-report", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Retry (r)", id="retry", variant="primary")
                yield Button("Quit (q)", id="quit")
        yield Footer()

    def on_mount(self) -> None:
        self._check(self._services)

    @work(thread=True)
    def _check(self, services: Services) -> None:
        try:
            self.post_message(DoctorDone(services.doctor.run()))
        except AgentboxError as exc:  # shown on the screen
            self.post_message(DoctorDone(None, error=error_info(title="doctor", exc=exc)))

    def on_doctor_done(self, message: DoctorDone) -> None:
        report = self.query_one("#doctor-report", Static)
        if message.report is not None:
            report.update(report_renderable(message.report))
        elif message.error is not None:
            report.update(f"The checks themselves failed: {message.error.message}")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "retry":
            self.action_retry()
        else:
            self.app.exit()

    def action_retry(self) -> None:
        self.dismiss(True)
