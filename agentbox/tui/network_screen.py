"""A workspace's network: the mode picker, the allowlist editor, and the network log
followed live (every connection the agent tried, as the proxy decided it)."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Static

from agentbox.bootstrap import Services
from agentbox.errors import AgentboxError, Cancelled
from agentbox.model.network import EntryKind, NetworkMode, parse_allow_entry
from agentbox.model.progress import CancelToken
from agentbox.tui.audit_screen import FOLLOW_GROUP
from agentbox.tui.dialogs import GoesBack
from agentbox.tui.messages import AllowlistChanged, NetRecordsArrived, NetworkLoaded
from agentbox.tui.operations import describe_update, error_info
from agentbox.tui.views import net_line
from agentbox.tui.widgets import network_text

KEEP = 1000  # records shown from before the screen opened


def entry_meaning(text: str) -> str:
    """What an allowlist entry lets through, in words; raises InvalidInput for a bad one."""
    entry = parse_allow_entry(text=text)
    ports = " and ".join(str(p) for p in entry.ports)
    port_words = f"port{'s' if len(entry.ports) > 1 else ''} {ports}"
    if entry.kind is EntryKind.HOST:
        return f"{entry.name} on {port_words}"
    if entry.kind is EntryKind.WILDCARD:
        return f"any name under {entry.name} (not {entry.name} itself) on {port_words}"
    network = entry.network
    assert network is not None
    single = network.prefixlen == network.max_prefixlen
    return f"{'the address ' + str(network.network_address) if single else f'addresses in {network}'} on {port_words}"


PICKER_KEYS = {NetworkMode.OFF: "1", NetworkMode.ALLOWLIST: "2", NetworkMode.LEARN: "3",
               NetworkMode.OPEN: "4"}  # least open first


class NetworkModeScreen(ModalScreen[NetworkMode | None]):
    """Pick the mode itself: a switch goes straight to the one chosen, never through a more
    open one on the way (as stepping through off → allowlist → open would)."""

    BINDINGS = [*(Binding(key, f"pick('{mode.value}')", mode.value.capitalize(), show=False)
                  for mode, key in PICKER_KEYS.items()),
                Binding("escape", "pick('')", "Cancel")]

    def __init__(self, *, name: str, current: NetworkMode | None) -> None:
        super().__init__(classes="dialog-screen")
        self.workspace = name
        self._current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog mode-picker"):
            yield Label(f"Network of {self.workspace}", classes="dialog-title")
            now = network_text(self._current, meaning=True) if self._current else Text("? unknown")
            yield Static(Text.assemble("now ", now, "\nA running workspace changes at once, a stopped one "
                                                    "when it next runs."))
            if self._current is NetworkMode.LEARN:
                yield Static("Allowlist (2) first shows what was learned, as a checklist to keep.", classes="hint")
            with Horizontal(classes="dialog-buttons"):
                for mode, key in PICKER_KEYS.items():
                    yield Button(f"{mode.value.capitalize()} ({key})", id=f"mode-{mode.value}", compact=True,
                                 variant="primary" if mode is self._current else "default")
                yield Button("Cancel (Esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one(f"#mode-{(self._current or NetworkMode.OFF).value}", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        button = event.button.id or ""
        self.action_pick(button.removeprefix("mode-") if button.startswith("mode-") else "")

    def action_pick(self, mode: str) -> None:
        self.dismiss(NetworkMode(mode) if mode else None)


class AllowlistScreen(GoesBack, Screen[None]):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("delete", "remove", "Remove"),
        Binding("f5", "reload", "Refresh", show=False),
    ]

    def __init__(self, *, services: Services, name: str) -> None:
        super().__init__()
        self._services = services
        self.workspace = name
        self._entries: tuple[str, ...] = ()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"Allowlist of {self.workspace}: where its agent may connect in allowlist mode",
                     classes="screen-title", markup=False)
        yield Static("loading…", id="network-mode")
        yield Input(placeholder="add a destination: pypi.org, *.github.com, 10.0.0.0/8:5432 (Enter adds)",
                    id="entry")
        yield Static("", id="entry-problem", classes="problem", markup=False)
        yield DataTable(id="allowlist", cursor_type="row", zebra_stripes=True)
        yield Static("", id="allowlist-empty", classes="hint", markup=False)
        with Horizontal(classes="button-row"):
            yield Button("Add (Enter)", id="add", compact=True, disabled=True)
            yield Button("Remove (Del)", id="remove", compact=True)
            yield Button("Back (Esc)", id="back", compact=True)
        yield Static("", id="status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("entry", "lets through")
        self.query_one("#entry", Input).focus()
        self.action_reload()

    def action_reload(self) -> None:
        self._load(self._services)

    @work(thread=True, exclusive=True, group="allowlist")
    def _load(self, services: Services) -> None:
        try:
            self.post_message(NetworkLoaded(services.network.show(name=self.workspace)))
        except AgentboxError as exc:  # shown on the screen
            self.post_message(NetworkLoaded(None, error=error_info(title="network", exc=exc)))

    def on_network_loaded(self, message: NetworkLoaded) -> None:
        mode = self.query_one("#network-mode", Static)
        if message.status is None:
            mode.update(f"✗ {message.error.message}" if message.error else "")
            return
        status = message.status
        text = network_text(status.mode, meaning=True)
        text.append(f"\nreaches now: {status.egress}")
        if status.mode is not NetworkMode.ALLOWLIST:
            text.append("\nThis list applies in allowlist mode only: w on the dashboard switches the mode.",
                        style="italic")
        mode.update(text)
        table = self.query_one(DataTable)
        table.clear()
        for entry in status.allowlist:
            table.add_row(entry, _quiet_meaning(entry), key=entry)
        self._entries = status.allowlist
        self.query_one("#allowlist-empty", Static).update(
            "" if self._entries else "Nothing is allowed yet: type a destination above and press Enter.")
        self.query_one("#remove", Button).disabled = not self._entries
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "remove":
            return bool(self._entries) or None
        return True

    def on_input_changed(self, event: Input.Changed) -> None:
        problem = self.query_one("#entry-problem", Static)
        problem.set_class(False, "ok")
        value = event.value.strip()
        if not value:
            problem.update("")
        else:
            try:
                problem.update(f"✓ lets through {entry_meaning(value)}")
                problem.set_class(True, "ok")
            except AgentboxError as exc:
                problem.update(f"✗ {exc.message}")
        self.query_one("#add", Button).disabled = not problem.has_class("ok")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._add()

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        match event.button.id:
            case "add":
                self._add()
            case "remove":
                self.action_remove()
            case _:
                self.action_back()

    def _add(self) -> None:
        value = self.query_one("#entry", Input).value.strip()
        if value:  # the service checks it again, and says why it refuses
            self._change(self._services, value, True)

    def action_remove(self) -> None:
        table = self.query_one(DataTable)
        if self._entries and table.cursor_row >= 0:
            self._change(self._services, self._entries[min(table.cursor_row, len(self._entries) - 1)], False)

    @work(thread=True, group="allowlist-change")
    def _change(self, services: Services, entry: str, allow: bool) -> None:
        verb = "allowed" if allow else "removed"
        try:
            change = services.network.allow if allow else services.network.deny
            update = change(name=self.workspace, entry=entry)
        except AgentboxError as exc:  # shown on the screen, with the service's hint
            self.post_message(AllowlistChanged(error=error_info(title=f"{entry} not {verb}", exc=exc)))
        else:
            self.post_message(AllowlistChanged(
                summary=f"{entry} {verb}; " + describe_update(name=self.workspace, update=update)))

    def on_allowlist_changed(self, message: AllowlistChanged) -> None:
        status = self.query_one("#status", Static)
        if message.error:
            error = message.error
            problem = self.query_one("#entry-problem", Static)
            problem.set_class(False, "ok")
            problem.update(f"✗ {error.message}" + (f"\n{error.hint}" if error.hint else ""))
            status.update(f"✗ {error.title}: {error.message}")
            return
        self.query_one("#entry", Input).value = ""
        status.update(message.summary)
        self.notify(message.summary)
        self.action_reload()


def _quiet_meaning(entry: str) -> str:
    try:
        return entry_meaning(entry)
    except AgentboxError:
        return ""


class NetLogScreen(GoesBack, Screen[None]):
    BINDINGS = [Binding("escape", "back", "Back")]

    def __init__(self, *, services: Services, name: str) -> None:
        super().__init__()
        self._services = services
        self.workspace = name
        self._cancel = CancelToken()
        self._count = 0
        self._denied = 0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"Network log of {self.workspace} · following: every connection its agent tried, as the "
                     "proxy decided it", classes="screen-title", markup=False)
        yield DataTable(id="netlog", cursor_type="row", zebra_stripes=True)
        yield Static("no connections yet", id="netlog-count", classes="hint", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("time", "verdict", "destination", "rule", "outcome")
        self._follow(self._services, self._cancel)

    def on_unmount(self) -> None:
        self._cancel.cancel()  # ends the follower thread within one poll

    @work(thread=True, group=FOLLOW_GROUP)
    def _follow(self, services: Services, cancel: CancelToken) -> None:
        try:
            # What is there already arrives in one message; then each new one as it comes.
            existing = list(services.network.records(name=self.workspace))
            self.post_message(NetRecordsArrived(existing[-KEEP:]))
            for index, record in enumerate(services.network.records(name=self.workspace, follow=True,
                                                                     cancel=cancel)):
                if index >= len(existing):
                    self.post_message(NetRecordsArrived([record]))
        except Cancelled:
            pass
        except AgentboxError as exc:  # shown on the screen
            self.post_message(NetRecordsArrived((), error=error_info(title="network log", exc=exc)))

    def on_net_records_arrived(self, message: NetRecordsArrived) -> None:
        count = self.query_one("#netlog-count", Static)
        if message.error:
            count.update(f"✗ {message.error.message}" + (f" ({message.error.hint})" if message.error.hint else ""))
            return
        table = self.query_one(DataTable)
        at_end = table.cursor_row >= table.row_count - 1
        for record in message.records:
            line = net_line(record)
            table.add_row(line.time, Text(line.verdict, style="green" if line.allowed else "red"),
                          line.destination, line.rule, line.outcome)
            self._denied += not line.allowed
        self._count += len(message.records)
        if self._count:
            count.update(f"{self._count} connection(s), {self._denied} denied · Esc goes back")
        if at_end and table.row_count:  # keep following the tail unless the user scrolled up to read
            table.move_cursor(row=table.row_count - 1)
