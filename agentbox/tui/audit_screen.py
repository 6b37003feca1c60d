"""A workspace's audit log, followed live: records appear as they are appended."""

from __future__ import annotations

from collections.abc import Callable

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from agentbox.audit import AuditRecord
from agentbox.bootstrap import Services
from agentbox.model.progress import CancelToken
from agentbox.tui.messages import AuditArrived
from agentbox.tui.views import audit_line

FOLLOW_GROUP = "follow"  # runs as long as the screen is open


class AuditScreen(Screen[None]):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, *, services: Services, name: str, poll_s: float) -> None:
        super().__init__()
        self._services = services
        self.workspace = name
        self._poll_s = poll_s
        self._cancel = CancelToken()
        self._count = 0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"Audit log of {self.workspace} · following: new records appear as they are written",
                     classes="screen-title", markup=False)
        yield DataTable(id="audit", cursor_type="row", zebra_stripes=True)
        yield Static("no records yet", id="audit-count", classes="hint")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("#", "time", "event", "details")
        self._follow(self._services, self._cancel)

    def on_unmount(self) -> None:
        self._cancel.cancel()  # ends the follower thread within one poll

    @work(thread=True, group=FOLLOW_GROUP)
    def _follow(self, services: Services, cancel: CancelToken) -> None:
        batch: list[AuditRecord] = []

        def flush() -> bool:
            # follow_records calls this after each read of the file: post what it yielded
            # as one message (a long log arrives in one go, not record by record).
            if batch:
                self.post_message(AuditArrived(list(batch)))
                batch.clear()
            return False

        stop: Callable[[], bool] = flush
        for record in services.audit.follow(name=self.workspace, cancel=cancel, poll_s=self._poll_s, stop=stop):
            batch.append(record)

    def on_audit_arrived(self, message: AuditArrived) -> None:
        table = self.query_one(DataTable)
        at_end = table.cursor_row >= table.row_count - 1
        for record in message.records:
            line = audit_line(record)
            table.add_row(str(line.seq), line.time, line.event, line.details)
        self._count += len(message.records)
        self.query_one("#audit-count", Static).update(f"{self._count} record(s) · Esc goes back")
        if at_end:  # keep following the tail unless the user scrolled up to read
            table.move_cursor(row=table.row_count - 1)
