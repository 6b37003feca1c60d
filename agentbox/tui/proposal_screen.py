"""After a learning session: the allowlist proposed from what the workspace used, as a
checklist. Tick the entries to keep, then apply them (mode `allowlist`) or save them into a
user template. The same as `agentbox net propose NAME [--apply] [--save TEMPLATE]`."""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.containers import Horizontal
from textual.widgets import Button, Footer, Header, Input, SelectionList, Static

from agentbox.bootstrap import Services
from agentbox.egress.proposal import Proposal
from agentbox.errors import AgentboxError
from agentbox.tui.dialogs import GoesBack
from agentbox.tui.operations import ErrorInfo, describe_update, error_info


class ProposalLoaded(Message):
    def __init__(self, proposal: Proposal | None, error: ErrorInfo | None = None) -> None:
        super().__init__()
        self.proposal = proposal
        self.error = error


class ProposalDone(Message):
    def __init__(self, *, summary: str = "", error: ErrorInfo | None = None, close: bool = False) -> None:
        super().__init__()
        self.summary = summary
        self.error = error
        self.close = close


class ProposalScreen(GoesBack, Screen[None]):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+a", "apply", "Apply"),
        Binding("ctrl+s", "save", "Save as template"),
    ]

    def __init__(self, *, services: Services, name: str) -> None:
        super().__init__()
        self._services = services
        self.workspace = name

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"What {self.workspace} used while learning: tick what it may keep reaching",
                     classes="screen-title", markup=False)
        yield Static("loading…", id="proposal-summary", markup=False)
        yield SelectionList[str](id="proposal")
        yield Input(placeholder="template name, to save the ticked entries as its allowlist", id="template")
        with Horizontal(classes="button-row"):
            yield Button("Apply: switch to allowlist (Ctrl+A)", id="apply", compact=True, disabled=True)
            yield Button("Save as template (Ctrl+S)", id="save", compact=True, disabled=True)
            yield Button("Switch, allowlist unchanged", id="switch", compact=True)
            yield Button("Back (Esc)", id="back", compact=True)
        yield Static("", id="status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self._load(self._services)

    @work(thread=True, exclusive=True, group="proposal")
    def _load(self, services: Services) -> None:
        try:
            self.post_message(ProposalLoaded(services.network.propose(name=self.workspace)))
        except AgentboxError as exc:
            self.post_message(ProposalLoaded(None, error=error_info(title="proposal", exc=exc)))

    def on_proposal_loaded(self, message: ProposalLoaded) -> None:
        summary = self.query_one("#proposal-summary", Static)
        if message.proposal is None:
            summary.update(f"✗ {message.error.message}" if message.error else "")
            return
        proposal = message.proposal
        choices = self.query_one(SelectionList)
        choices.clear_options()
        for entry in proposal.entries:
            covers = f" (covers {', '.join(entry.hosts)})" if len(entry.hosts) > 1 else ""
            choices.add_option((f"{entry.text}{covers}: {entry.connections} connection(s)", entry.text, True))
        summary.update(f"{proposal.allowed} allowed and {proposal.refused} refused connection(s) in the log"
                       + ("" if proposal.entries else ": nothing to propose yet (let the agent work in learn mode)"))
        for button in ("#apply", "#save"):
            self.query_one(button, Button).disabled = not proposal.entries
        choices.focus()

    def _ticked(self) -> tuple[str, ...]:
        return tuple(self.query_one(SelectionList).selected)

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        match event.button.id:
            case "apply":
                self.action_apply()
            case "save":
                self.action_save()
            case "switch":
                self._switch(self._services)
            case _:
                self.action_back()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_save()

    def action_apply(self) -> None:
        if self._ticked():
            self._apply(self._services, self._ticked())
        else:
            self.query_one("#status", Static).update("✗ nothing ticked: tick at least one entry (Space)")

    def action_save(self) -> None:
        template = self.query_one("#template", Input).value.strip()
        if not template:
            self.query_one("#status", Static).update("✗ type a template name first")
            self.query_one("#template", Input).focus()
        elif not self._ticked():
            self.query_one("#status", Static).update("✗ nothing ticked: tick at least one entry (Space)")
        else:
            self._save(self._services, template, self._ticked())

    @work(thread=True, group="proposal-change")
    def _apply(self, services: Services, entries: tuple[str, ...]) -> None:
        try:
            update = services.network.apply_proposal(name=self.workspace, entries=entries)
        except AgentboxError as exc:
            self.post_message(ProposalDone(error=error_info(title="not applied", exc=exc)))
        else:
            self.post_message(ProposalDone(summary=describe_update(name=self.workspace, update=update)
                                           + f", allowlist {', '.join(update.policy.render())}", close=True))

    @work(thread=True, group="proposal-change")
    def _switch(self, services: Services) -> None:
        try:
            update = services.network.set_mode(name=self.workspace, mode="allowlist")
        except AgentboxError as exc:
            self.post_message(ProposalDone(error=error_info(title="not switched", exc=exc)))
        else:
            self.post_message(ProposalDone(summary=describe_update(name=self.workspace, update=update), close=True))

    @work(thread=True, group="proposal-change")
    def _save(self, services: Services, template: str, entries: tuple[str, ...]) -> None:
        try:
            path: Path = services.network.save_proposal(name=self.workspace, template=template, entries=entries)
        except AgentboxError as exc:
            self.post_message(ProposalDone(error=error_info(title="not saved", exc=exc)))
        else:
            self.post_message(ProposalDone(summary=f"saved as template {template!r}: {path}"))

    def on_proposal_done(self, message: ProposalDone) -> None:
        status = self.query_one("#status", Static)
        if message.error:
            status.update(f"✗ {message.error.title}: {message.error.message}"
                          + (f"\n{message.error.hint}" if message.error.hint else ""))
            return
        status.update(message.summary)
        self.notify(message.summary)
        if message.close:
            self.dismiss(None)
