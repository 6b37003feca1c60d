"""What the list screens (checkpoints, shares, outbox) share: each button runs the action
of its id, each change runs on a ProgressScreen, and its outcome lands in the screen's
`#status` line (and an error dialog) before the list is loaded again."""

from __future__ import annotations

from typing import Any, cast

from textual.screen import Screen
from textual.widgets import Button, Static

from agentbox.tui.dialogs import ErrorScreen
from agentbox.tui.operations import Operation, OperationResult
from agentbox.tui.progress_screen import ProgressScreen


class RunsOperations:
    """Mixin for a Screen with an `action_reload` and a `#status` Static."""

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        await cast(Screen[Any], self).run_action(event.button.id or "back")

    def run_operation(self, operation: Operation) -> None:
        cast(Screen[Any], self).app.push_screen(ProgressScreen(operation=operation), self._show_outcome)

    def _show_outcome(self, result: OperationResult | None) -> None:
        if result is None:
            return
        screen = cast(Screen[Any], self)
        status = screen.query_one("#status", Static)
        if result.error:
            status.update(f"✗ {result.error.title}: {result.error.message}")
            screen.app.push_screen(ErrorScreen(result.error))
        else:
            status.update(result.summary)
            screen.notify(result.summary, severity="warning" if result.cancelled else "information")
        cast(Any, self).action_reload()
