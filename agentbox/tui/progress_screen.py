"""Runs one long operation in a worker thread and shows its progress; Esc cancels it.

The screen is the worker's owner: progress arrives as messages, and the screen dismisses
itself with the `OperationResult` (never raises), so every caller handles the outcome in one
callback.
"""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, ProgressBar, Static

from agentbox.model.progress import CancelToken, Progress
from agentbox.tui.dialogs import DismissOnTop
from agentbox.tui.messages import OperationFinished, OperationProgressed
from agentbox.tui.operations import Operation, OperationResult, perform

OPERATION_GROUP = "operation"


class ProgressScreen(DismissOnTop, ModalScreen[OperationResult]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, *, operation: Operation) -> None:
        super().__init__(classes="dialog-screen")
        self.operation = operation
        self._cancel = CancelToken()
        self._step_index = 0

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog progress-dialog"):
            yield Label(self.operation.title, classes="dialog-title")
            yield Static("starting…", id="progress-step", markup=False)
            yield ProgressBar(total=None, show_eta=False, id="progress-bar")
            yield Static("Esc cancels" if self.operation.cancellable else "Please wait: this cannot be cancelled",
                         id="progress-hint", classes="hint")

    def on_mount(self) -> None:
        self._run(self._cancel)

    @work(thread=True, group=OPERATION_GROUP)
    def _run(self, cancel: CancelToken) -> None:
        result = perform(operation=self.operation, cancel=cancel,
                         on_progress=lambda p: self.post_message(OperationProgressed(p)))
        self.post_message(OperationFinished(result))

    def on_operation_progressed(self, message: OperationProgressed) -> None:
        p: Progress = message.progress
        bar = self.query_one(ProgressBar)
        if p.total:
            self._step_index = p.index
            bar.update(total=p.total, progress=max(p.index - 1, 0))
        elif p.fraction is not None and bar.total:
            # A measurable sub-step (a download): move within the current step.
            bar.update(progress=max(self._step_index - 1, 0) + max(0.0, min(1.0, p.fraction)))
        counter = f"[{p.index}/{p.total}] " if p.total else ""
        percent = f" {p.fraction * 100:.0f}%" if p.fraction is not None else ""
        self.query_one("#progress-step", Static).update(f"{counter}{p.step}{percent}: {p.detail}".rstrip(": "))

    def on_operation_finished(self, message: OperationFinished) -> None:
        self.dismiss_on_top(message.result)

    def action_cancel(self) -> None:
        if not self.operation.cancellable:
            self.notify("This step cannot be cancelled; it ends by itself.", severity="warning")
            return
        self._cancel.cancel()
        self.query_one("#progress-hint", Static).update("Cancelling: undoing what was done so far…")
