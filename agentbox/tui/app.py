"""The Textual app: it receives its services (built by bootstrap, or fakes in tests) and
opens the dashboard. `run_tui` is what `agentbox` with no command (and `agentbox tui`) calls."""

from __future__ import annotations

from rich.text import Text
from textual.app import App
from textual.message_pump import active_message_pump
from textual.screen import Screen
from textual.worker import WorkerFailed

from agentbox.bootstrap import Services, build_services
from agentbox.errors import AgentboxError
from agentbox.tui.crash import CrashScreen, UnexpectedError, describe, write_log
from agentbox.tui.dashboard import DashboardScreen
from agentbox.tui.dialogs import ErrorScreen
from agentbox.tui.operations import error_info
from agentbox.tui.terminal import SuspendedTerminal, Terminal, TuiOptions

TITLE = "agentbox"
SUB_TITLE = "safe workspaces for AI agents"


class AgentboxApp(App[None]):
    TITLE = TITLE
    SUB_TITLE = SUB_TITLE
    CSS_PATH = ["app.tcss", "dashboard.tcss", "dialogs.tcss"]

    def __init__(self, *, services: Services, options: TuiOptions | None = None,
                 terminal: Terminal | None = None) -> None:
        super().__init__()
        self.services = services
        self.options = options or TuiOptions()
        self.terminal = terminal or SuspendedTerminal()
        self.unexpected: list[BaseException] = []  # what reached the boundary, oldest first
        self._stopped_screen = False

    def get_default_screen(self) -> Screen[None]:
        return DashboardScreen(services=self.services, options=self.options, terminal=self.terminal)

    def _handle_exception(self, error: Exception) -> None:
        # Textual sends every exception a handler or a worker lets out here (it has no public
        # hook for this); its own handling prints a traceback and exits.
        if self._stopped_screen:  # a second failure behind the crash screen, or in it: give up
            super()._handle_exception(error)
            return
        if isinstance(error, WorkerFailed):
            self._report_safely(error, cause=error.error, where="a background task", recoverable=True)
        elif active_message_pump.get(None) is self:
            # The app's own message loop has stopped: it ends now, so say it after the full screen.
            logged = write_log(log=self.services.crash_log, error=error, where="the interface")
            self.unexpected.append(error)
            self._return_code = 1
            said = (f"agentbox hit an error it did not expect: {describe(error)}\n{logged}\n"
                    "This is a bug in agentbox: please report it with that traceback.\n")
            self._exit_renderables.append(Text(said, overflow="fold"))  # never cropped: the path must be whole
            self._close_messages_no_wait()
        else:
            self._report_safely(error, cause=error, where="the interface", recoverable=False)

    def _report_safely(self, error: Exception, *, cause: BaseException, where: str, recoverable: bool) -> None:
        try:
            self.report_unexpected(cause, where=where, recoverable=recoverable)
        except Exception:  # noqa: BLE001 - the boundary itself failed (no screen yet): Textual's own way
            super()._handle_exception(error)

    def on_unexpected_error(self, message: UnexpectedError) -> None:
        self.report_unexpected(message.error, where=message.where, recoverable=True)

    def report_unexpected(self, error: BaseException, *, where: str, recoverable: bool) -> None:
        if isinstance(error, AgentboxError) and recoverable:
            self.push_screen(ErrorScreen(error_info(title=f"Failed in {where}", exc=error)))
            return
        self.unexpected.append(error)
        logged = write_log(log=self.services.crash_log, error=error, where=where)
        self._stopped_screen = self._stopped_screen or not recoverable
        self.push_screen(CrashScreen(error=error, where=where, logged=logged, recoverable=recoverable))


def run_tui(*, services: Services | None = None) -> int:
    """Build the real services (settings errors surface to the CLI's error boundary) and run."""
    app = AgentboxApp(services=services or build_services())
    app.run()
    return app.return_code or 0
