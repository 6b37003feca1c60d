"""The dashboard: every workspace in a table, the selected one's details beside it, and the
actions of actions.py as keys, buttons and palette entries.

A background worker reloads everything on an interval (and after each action); long
actions run on a ProgressScreen; quick ones (the SSH command, a network switch) run in a
worker too, so the UI thread never waits on libvirt or the disk. The approval desk watches
every running workspace's proxy for connections waiting for a person's answer.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from functools import partial

from rich.cells import cell_len
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Static

from agentbox.bootstrap import Services
from agentbox.errors import AgentboxError, BackendUnavailable
from agentbox.model.network import NetworkMode
from agentbox.model.recording import RecordingKind
from agentbox.model.progress import CancelToken
from agentbox.model.workspace import StandbyState, WorkspaceState
from agentbox.tui import operations
from agentbox.tui.actions import BY_ACTION, DASHBOARD_ACTIONS, applies
from agentbox.tui.approval_screen import ApprovalDesk
from agentbox.tui.audit_screen import AuditScreen
from agentbox.tui.checkpoints_screen import CheckpointsScreen
from agentbox.tui.commands import PaletteCommand, ScreenCommands
from agentbox.tui.dialogs import ConfirmScreen, ErrorScreen, TypeNameScreen
from agentbox.tui.doctor_screen import DoctorScreen
from agentbox.tui.evidence_screen import EvidenceScreen
from agentbox.services.agents import AgentTerminal
from agentbox.tui.messages import (ActionFailed, AgentTerminalReady, ApprovalAnswered, ApprovalRequested,
                                   DashboardLoaded, LoadFailed, QuickActionDone, SshCommandReady)
from agentbox.tui.network_screen import AllowlistScreen, NetLogScreen, NetworkModeScreen
from agentbox.tui.proposal_screen import ProposalScreen
from agentbox.tui.operations import ErrorInfo, Operation, OperationResult, error_info
from agentbox.tui.outbox_screen import OutboxScreen
from agentbox.tui.shares_screen import SharesScreen
from agentbox.tui.terminal import Terminal, TuiOptions
from agentbox.tui.progress_screen import ProgressScreen
from agentbox.tui.views import DashboardData, RecentEvents, WorkspaceDetails, WorkspaceRow, load_dashboard
from agentbox.tui.widgets import BUTTON_PREFIX, DetailsPanel, WorkspaceTable, network_text, state_text
from agentbox.tui.wizard import NewWorkspace, NewWorkspaceScreen

EMPTY_TEXT = "No workspaces yet. Press n to create your first one."
COLUMNS = ("name", "state", "agent", "template", "network", "last reset", "created")


class DashboardScreen(Screen[None]):
    BINDINGS = [
        Binding("q", "app.quit", "Quit"),  # first: the one key everybody needs to find
        *(Binding(spec.key, spec.action, spec.label, show=spec.footer, key_display=spec.shown_key or None)
          for spec in DASHBOARD_ACTIONS),
        Binding("question_mark", "keys", "All keys", show=False),
        Binding("f5", "reload", "Refresh", show=False),
    ]
    COMMANDS = {ScreenCommands}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]

    def __init__(self, *, services: Services, options: TuiOptions, terminal: Terminal) -> None:
        super().__init__()
        self._services = services
        self._options = options
        self._terminal = terminal
        self._rows: tuple[WorkspaceRow, ...] | None = None  # None until the first load
        self._details: WorkspaceDetails | None = None
        self._selected: str | None = None
        self._recent = RecentEvents()  # used by one load at a time (see below)
        self._doctor: DoctorScreen | None = None
        self._last_load_error = ""
        # One load at a time: on a slow host a load may outlast the interval, and replacing
        # it with a newer one each time would never show anything. Asks meanwhile queue one.
        self._loading = False
        self._load_again = False
        self._desk = ApprovalDesk(screen=self, services=services, report=self._report)

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            with Vertical(id="workspaces-pane"):
                yield WorkspaceTable(id="workspaces", cursor_type="row", zebra_stripes=True)
                with Vertical(id="empty"):
                    yield Static(EMPTY_TEXT, id="empty-text")
                    yield Button("New workspace (n)", id=f"{BUTTON_PREFIX}new", variant="primary")
            yield DetailsPanel(id="details")
        yield Static("loading workspaces…", id="status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*COLUMNS)
        self.query_one("#empty").display = False
        self.set_interval(self._options.refresh_s, self.reload)
        self.reload()

    def on_unmount(self) -> None:
        self._desk.stop_all()  # each watch ends within one poll; the proxies then deny what is left

    # -- loading -----------------------------------------------------------------------

    def reload(self) -> None:
        if self._loading:
            self._load_again = True
            return
        self._loading = True
        self._load(self._services, self._selected)

    def _loaded(self) -> None:
        self._loading = False
        if self._load_again:
            self._load_again = False
            self.reload()

    def action_reload(self) -> None:
        self.reload()

    @work(thread=True, group="refresh")
    def _load(self, services: Services, selected: str | None) -> None:
        try:
            data = load_dashboard(services=services, selected=selected, recent=self._recent)
        except AgentboxError as exc:  # becomes a status line or the doctor screen
            self.post_message(LoadFailed(error_info(title="Could not list workspaces", exc=exc),
                                         unavailable=isinstance(exc, BackendUnavailable)))
        else:
            self.post_message(DashboardLoaded(data))

    def on_dashboard_loaded(self, message: DashboardLoaded) -> None:
        self._loaded()
        if self._doctor is not None:  # the hypervisor is back
            self._doctor.dismiss_on_top(False)
        if self._last_load_error:
            self._last_load_error = ""
            self._status("workspaces listed again")
        self._show(message.data)

    def on_load_failed(self, message: LoadFailed) -> None:
        self._loaded()
        status = self.query_one("#status", Static)
        if message.unavailable and self._rows is None and self._doctor is None:
            self._doctor = DoctorScreen(services=self._services, error=message.error)
            self.app.push_screen(self._doctor, self._after_doctor)
        if message.error.message != self._last_load_error:  # say it once, not every refresh
            self._last_load_error = message.error.message
            status.update(f"✗ {message.error.message}" + (f" ({message.error.hint})" if message.error.hint else ""))

    def _after_doctor(self, retry: bool | None) -> None:
        self._doctor = None
        if retry:
            self.reload()

    def _show(self, data: DashboardData) -> None:
        table = self.query_one(DataTable)
        first = self._rows is None
        names = [row.name for row in data.rows]
        if self._selected not in names:  # first load, or the selected one is gone
            self._selected = data.details.name if data.details else None
        # Details of a row the cursor has already left: the reload queued by that move follows.
        stale = data.details is not None and data.details.name != self._selected
        if data.rows != self._rows:
            # Rebuilding moves the cursor; those moves are ours, not the user's.
            cells = [(row.name, state_text(row.state), row.agent, row.template, network_text(row.network),
                      row.last_reset, row.created) for row in data.rows]
            with self.prevent(DataTable.RowHighlighted):
                # Widths set here, not measured by the table when it next idles: a frame drawn
                # before that measurement kept its truncated columns until the next change.
                table.clear(columns=True)
                for index, label in enumerate(COLUMNS):
                    table.add_column(label, key=label,
                                     width=max([cell_len(label)] + [_cell_width(c[index]) for c in cells]))
                for row, cell in zip(data.rows, cells, strict=True):
                    table.add_row(*cell, key=row.name)
                if self._selected in names:
                    table.move_cursor(row=names.index(self._selected))
            self._rows = data.rows
        empty = not data.rows
        table.display = not empty
        self.query_one("#empty").display = empty
        self.query_one(DetailsPanel).display = not empty
        if not stale:
            self._details = data.details
            self.query_one(DetailsPanel).show(data.details)
        if first:
            self._status(f"{len(data.rows)} workspace(s)" if data.rows else "")
        self._desk.track(row.name for row in data.rows if row.state is WorkspaceState.RUNNING)
        self.refresh_bindings()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        name = event.row_key.value
        if name and name != self._selected:
            self._selected = name
            self.reload()

    # -- which actions apply -------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        spec = BY_ACTION.get(action)
        return True if spec is None else applies(spec, self._details)

    def palette_commands(self) -> list[PaletteCommand]:
        name = self._details.name if self._details else ""
        return [PaletteCommand(title=f"{spec.label} {name}".strip() if spec.needs.value != "nothing" else spec.label,
                               help=f"{spec.help} [{spec.key_text}]", run=partial(self.run_action, spec.action))
                for spec in DASHBOARD_ACTIONS if applies(spec, self._details)]

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        button_id = event.button.id or ""
        if button_id.startswith(BUTTON_PREFIX):
            event.stop()
            await self.run_action(button_id.removeprefix(BUTTON_PREFIX))

    def _target(self, action: str) -> str | None:
        """The selected workspace if `action` applies to it; otherwise say why not."""
        spec = BY_ACTION[action]
        if self._details is None:
            self.notify("Select a workspace first.", severity="warning")
            return None
        if self._details.name != self._selected:  # never act on the row the cursor just left
            self.notify(f"Still loading {self._selected}; try again in a moment.", severity="warning")
            return None
        if not applies(spec, self._details):
            self.notify(f"{spec.label} does not apply to {self._details.name} ({self._details.state.value}).",
                        severity="warning")
            return None
        return self._details.name

    # -- actions -------------------------------------------------------------------------

    def action_new(self) -> None:
        taken = frozenset(row.name for row in self._rows or ())

        def chosen(new: NewWorkspace | None) -> None:
            # The wizard has asked for the agent's missing API keys already.
            if new is not None:
                self._selected = new.request.name
                self._run(operations.create(services=self._services, request=new.request, allow=new.allow))

        self.app.push_screen(NewWorkspaceScreen(services=self._services, taken=taken), chosen)

    def action_start(self) -> None:
        if name := self._target("start"):
            self._run(operations.start(services=self._services, name=name))

    def action_repair(self) -> None:
        if name := self._target("repair"):
            self._run(operations.repair(services=self._services, name=name))

    def action_resume(self) -> None:
        if name := self._target("resume"):
            self._run(operations.resume(services=self._services, name=name))

    def action_stop(self) -> None:
        if name := self._target("stop"):
            self._run(operations.stop(services=self._services, name=name))

    def action_reset(self) -> None:
        if name := self._target("reset"):
            self._confirm(title=f"Reset {name}?", confirm="Reset",
                          body=f"{name} goes back to its clean state: everything done in it since is lost "
                               "(files, processes, installed packages).",
                          then=lambda: self._run(operations.reset(services=self._services, name=name)))

    def action_panic(self) -> None:
        if name := self._target("panic"):  # asks nothing: the point is not to wait
            self._run(operations.panic(services=self._services, name=name))

    def action_standby(self) -> None:
        if name := self._target("standby"):
            on = self._services.workspaces.get(name=name).standby is StandbyState.OFF
            body = (f"A paused clean copy of {name} stands by (one more guest's RAM); resets swap to it. "
                    f"{name} is reset once now, to make it." if on else
                    f"The copy standing by goes; resets of {name} revert in place again.")
            self._confirm(title=f"Standby {'on' if on else 'off'} for {name}?", confirm="On" if on else "Off",
                          body=body, then=lambda: self._run(operations.standby(services=self._services, name=name,
                                                                                on=on)))

    def action_end_session(self) -> None:
        if name := self._target("end_session"):
            self._confirm(title=f"End the session of {name}?", confirm="End session",
                          body=f"{name} is then reset to its clean state, unless its template keeps the state.",
                          then=lambda: self._run(operations.end_session(services=self._services, name=name)))

    def action_destroy(self) -> None:
        if name := self._target("destroy"):
            self.app.push_screen(TypeNameScreen(name=name), lambda yes: self._run(
                operations.destroy(services=self._services, name=name)) if yes else None)

    def action_shell(self) -> None:
        if name := self._target("shell"):
            self._ssh_command(self._services, name, "shell")

    def action_open(self) -> None:
        """Enter on a row: the agent where the workspace has one, else a shell."""
        if self._details is not None and self._details.agents:
            self.action_agent()
        else:
            self.action_shell()

    def action_agent(self) -> None:
        if name := self._target("agent"):
            self._status(f"opening the agent of {name}…")
            self._open_agent(self._services, name)

    def action_copy_ssh(self) -> None:
        if name := self._target("copy_ssh"):
            self._ssh_command(self._services, name, "copy")

    def action_audit(self) -> None:
        if name := self._target("audit"):
            self.app.push_screen(AuditScreen(services=self._services, name=name, poll_s=self._options.follow_poll_s))

    def action_checkpoints(self) -> None:
        if name := self._target("checkpoints"):
            self.app.push_screen(CheckpointsScreen(services=self._services, name=name), lambda _: self.reload())

    def action_evidence(self) -> None:
        if name := self._target("evidence"):
            taken = frozenset(row.name for row in self._rows or ())
            self.app.push_screen(EvidenceScreen(services=self._services, name=name, taken=taken),
                                 lambda _: self.reload())

    def action_network(self) -> None:
        if (name := self._target("network")) and self._details is not None:
            learning = self._details.network is NetworkMode.LEARN

            def chosen(mode: NetworkMode | None) -> None:
                if mode is NetworkMode.ALLOWLIST and learning:  # after learning: the checklist first
                    self.app.push_screen(ProposalScreen(services=self._services, name=name), lambda _: self.reload())
                elif mode is not None:
                    self._switch_network(self._services, name, mode)
            self.app.push_screen(NetworkModeScreen(name=name, current=self._details.network), chosen)

    def action_allowlist(self) -> None:
        if name := self._target("allowlist"):
            self.app.push_screen(AllowlistScreen(services=self._services, name=name), lambda _: self.reload())

    def action_net_log(self) -> None:
        if name := self._target("net_log"):
            self.app.push_screen(NetLogScreen(services=self._services, name=name))

    def action_shares(self) -> None:
        if name := self._target("shares"):
            self.app.push_screen(SharesScreen(services=self._services, name=name), lambda _: self.reload())

    def action_outbox(self) -> None:
        if name := self._target("outbox"):
            self.app.push_screen(OutboxScreen(services=self._services, name=name), lambda _: self.reload())

    def action_keys(self) -> None:
        if self.query("HelpPanel"):
            self.app.action_hide_help_panel()
        else:
            self.app.action_show_help_panel()

    # -- approvals (see approval_screen.py) ------------------------------------------------

    def on_approval_requested(self, message: ApprovalRequested) -> None:
        self._desk.requested(message.held)

    def on_approval_answered(self, message: ApprovalAnswered) -> None:
        self._desk.answered(message.outcome)
        self.reload()  # "always" changed the allowlist

    def _report(self, text: str, severity: str) -> None:
        self._status(text)
        self.notify(text, severity=severity)  # type: ignore[arg-type]

    # -- running things ------------------------------------------------------------------

    def _confirm(self, *, title: str, body: str, confirm: str, then: Callable[[], None]) -> None:
        self.app.push_screen(ConfirmScreen(title=title, body=body, confirm=confirm, danger=True),
                             lambda yes: then() if yes else None)

    def _run(self, operation: Operation) -> None:
        self._status(f"{operation.title}…")
        self.app.push_screen(ProgressScreen(operation=operation), self._after_operation)

    def _after_operation(self, result: OperationResult | None) -> None:
        if result is None:
            return
        if result.error is not None:
            self._show_error(result.error)
        else:
            self._status(result.summary)
            self.notify(result.summary, severity="warning" if result.cancelled else "information")
        self.reload()

    @work(thread=True, group="quick")
    def _switch_network(self, services: Services, name: str, mode: NetworkMode) -> None:
        try:
            update = operations.set_network(services=services, name=name, mode=mode)
        except AgentboxError as exc:  # shown as a dialog
            self.post_message(ActionFailed(error_info(title=f"Could not switch the network of {name}", exc=exc)))
        else:
            self.post_message(QuickActionDone(operations.describe_update(name=name, update=update)))

    def on_quick_action_done(self, message: QuickActionDone) -> None:
        self._status(message.summary)
        self.notify(message.summary)
        self.reload()

    @work(thread=True, group="quick")
    def _ssh_command(self, services: Services, name: str, purpose: str) -> None:
        try:
            argv = services.workspaces.ssh_command(name=name, command=[])
        except AgentboxError as exc:  # shown as a dialog
            title = f"Could not open a shell in {name}" if purpose == "shell" else \
                f"Could not copy the SSH command of {name}"
            self.post_message(ActionFailed(error_info(title=title, exc=exc)))
        else:
            self.post_message(SshCommandReady(name=name, argv=argv, purpose=purpose))

    def on_ssh_command_ready(self, message: SshCommandReady) -> None:
        if message.purpose == "copy":
            command = shlex.join(message.argv)
            self.app.copy_to_clipboard(command)
            self._status(f"copied: {command}")
            self.notify(command, title="SSH command copied")
            return
        try:
            code = self._terminal.hand_over(app=self.app, argv=message.argv, run=self._recorded_shell(message.name))
        except (AgentboxError, OSError) as exc:  # e.g. no ssh client, or a terminal that cannot suspend
            self._show_error(error_info(title=f"Could not open a shell in {message.name}", exc=exc))
        else:
            self._status(f"shell in {message.name} closed (exit code {code})")
        self.reload()

    def _recorded_agent(self, terminal: AgentTerminal) -> Callable[[], int] | None:
        recordings = self._services.recordings
        if not recordings.enabled:
            return None
        return lambda: recordings.run_recorded(name=terminal.workspace, argv=terminal.argv,
                                               shown=[terminal.agent.command], kind=RecordingKind.AGENT).exit_code

    def _recorded_shell(self, name: str) -> Callable[[], int] | None:
        recordings = self._services.recordings
        if not recordings.enabled:
            return None
        return lambda: recordings.run_terminal(name=name, command=[], kind=RecordingKind.SHELL).exit_code

    @work(thread=True, group="quick")
    def _open_agent(self, services: Services, name: str) -> None:
        # Quick: the agent action applies to running workspaces, so this only opens a session.
        try:
            terminal = services.agents.open(name=name, agent=None, on_progress=lambda _: None, cancel=CancelToken())
        except AgentboxError as exc:  # shown as a dialog
            self.post_message(ActionFailed(error_info(title=f"Could not open the agent of {name}", exc=exc)))
        else:
            self.post_message(AgentTerminalReady(terminal))

    def on_agent_terminal_ready(self, message: AgentTerminalReady) -> None:
        terminal = message.terminal
        try:
            code = self._terminal.hand_over(app=self.app, argv=terminal.argv, run=self._recorded_agent(terminal))
        except (AgentboxError, OSError) as exc:  # the session it opened still ends below
            self._show_error(error_info(title=f"Could not open the agent of {terminal.workspace}", exc=exc))
            code = -1
        self._run(operations.close_agent(services=self._services, terminal=terminal, exit_code=code))

    def on_action_failed(self, message: ActionFailed) -> None:
        self._show_error(message.error)
        self.reload()  # a refusal often means the workspace changed behind our back

    def _show_error(self, error: ErrorInfo) -> None:
        self._status(f"✗ {error.title}: {error.message}")
        self.app.push_screen(ErrorScreen(error))

    def _status(self, text: str) -> None:
        self.query_one("#status", Static).update(text)


def _cell_width(cell: str | Text) -> int:
    return cell.cell_len if isinstance(cell, Text) else cell_len(cell)
