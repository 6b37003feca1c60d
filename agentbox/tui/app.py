"""The Textual app: it receives its services (built by bootstrap, or fakes in tests) and
opens the dashboard. `run_tui` is what `agentbox` with no command (and `agentbox tui`) calls."""

from __future__ import annotations

from textual.app import App
from textual.screen import Screen

from agentbox.bootstrap import Services, build_services
from agentbox.tui.dashboard import DashboardScreen
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

    def get_default_screen(self) -> Screen[None]:
        return DashboardScreen(services=self.services, options=self.options, terminal=self.terminal)


def run_tui(*, services: Services | None = None) -> int:
    """Build the real services (settings errors surface to the CLI's error boundary) and run."""
    AgentboxApp(services=services or build_services()).run()
    return 0
