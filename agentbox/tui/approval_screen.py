"""The approval prompt, and the desk that feeds it.

The desk keeps one `ApprovalWatch` (a thread worker of the dashboard) per running workspace
and shows held requests one at a time, over whatever screen is open: the workspace, the
destination, Allow once / Always / Deny by key or mouse, and a countdown to the proxy's own
deny. The answer goes back through the watch that received the request.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import partial

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Label, ProgressBar, Static

from agentbox.bootstrap import Services
from agentbox.egress.approvals import ApprovalVerdict
from agentbox.tui.approvals import APPROVAL_WAIT_S, ApprovalOutcome, ApprovalWatch, HeldRequest
from agentbox.tui.crash import UnexpectedError
from agentbox.tui.dialogs import DismissOnTop
from agentbox.tui.messages import ApprovalAnswered, ApprovalRequested

TICK_S = 0.25
ANSWERS = {"once": ApprovalVerdict.ALLOW_ONCE, "always": ApprovalVerdict.ALLOW_ALWAYS,
           "deny": ApprovalVerdict.DENY}


class ApprovalScreen(DismissOnTop, ModalScreen[ApprovalVerdict | None]):
    """Dismissed with the verdict, or None when the proxy's wait ran out first."""

    AUTO_FOCUS = "#deny"  # a stray Enter must not let anything out
    BINDINGS = [
        Binding("o", "answer('once')", "Allow once"),
        Binding("a", "answer('always')", "Always"),
        Binding("d,escape", "answer('deny')", "Deny"),
    ]

    def __init__(self, *, held: HeldRequest, clock: Callable[[], datetime], waiting: int = 0) -> None:
        super().__init__(classes="dialog-screen")
        self.held = held
        self._clock = clock
        self._waiting = waiting
        self._done = False

    def compose(self) -> ComposeResult:
        held, request = self.held, self.held.request
        address = f" ({request.address})" if request.address else ""
        with Vertical(classes="dialog approval-dialog"):
            yield Label(f"Allow {held.workspace} to connect to {held.destination}?", classes="dialog-title",
                        markup=False)
            yield Static(f"The agent in {held.workspace} is trying to reach {request.host}{address} on port "
                         f"{request.port}. It is not on the allowlist, so the connection waits for you.",
                         id="approval-body", markup=False)
            yield Static(f"Always adds {held.destination} to the allowlist of {held.workspace}.",
                         classes="hint", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Allow once (o)", id="once", variant="primary")
                yield Button("Always (a)", id="always", variant="warning")
                yield Button("Deny (d)", id="deny", variant="error")
            with Horizontal(id="approval-timer"):
                yield Static("", id="countdown", markup=False)
                yield ProgressBar(total=APPROVAL_WAIT_S, show_eta=False, show_percentage=False, id="approval-bar")
            yield Static("", id="approval-waiting", classes="hint", markup=False)

    def on_mount(self) -> None:
        self.set_waiting(self._waiting)
        self._tick()
        self.set_interval(TICK_S, self._tick)

    def set_waiting(self, count: int) -> None:
        self._waiting = count
        for line in self.query("#approval-waiting").results(Static):  # none yet before compose: on_mount shows it
            line.update(f"{count} more request(s) waiting after this one" if count else "")

    def _tick(self) -> None:
        left = self.held.remaining_s(now=self._clock())
        self.query_one("#countdown", Static).update(f"Denied in {left} s unless you answer")
        self.query_one(ProgressBar).update(progress=min(left, APPROVAL_WAIT_S))
        if left <= 0:
            self._finish(None)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_answer(event.button.id or "deny")

    def action_answer(self, which: str) -> None:
        self._finish(ANSWERS[which])

    def _finish(self, verdict: ApprovalVerdict | None) -> None:
        if not self._done:
            self._done = True
            self.dismiss_on_top(verdict)


class ApprovalDesk:
    """Owned by the dashboard: which workspaces are watched, and the prompts waiting."""

    def __init__(self, *, screen: Screen[None], services: Services,
                 report: Callable[[str, str], None]) -> None:
        self._screen = screen
        self._services = services
        self._report = report  # (text, severity): the dashboard's status line and a notification
        self._watches: dict[str, ApprovalWatch] = {}
        self._queue: deque[HeldRequest] = deque()
        self._prompt: ApprovalScreen | None = None

    @property
    def watched(self) -> frozenset[str]:
        return frozenset(self._watches)

    def track(self, running: Iterable[str]) -> None:
        """Watch exactly the workspaces in `running`."""
        wanted = set(running)
        for name in [n for n in self._watches if n not in wanted]:
            self._watches.pop(name).stop()
            self._queue = deque(h for h in self._queue if h.workspace != name)
        for name in sorted(wanted - set(self._watches)):
            watch = ApprovalWatch(services=self._services, name=name,
                                  on_request=lambda held: self._screen.post_message(ApprovalRequested(held)),
                                  on_outcome=lambda outcome: self._screen.post_message(ApprovalAnswered(outcome)),
                                  on_crash=self._crash_reporter(name))
            self._watches[name] = watch
            watch.start()

    def _crash_reporter(self, name: str) -> Callable[[BaseException], object]:
        def report(exc: BaseException) -> object:
            return self._screen.app.post_message(UnexpectedError(exc, where=f"the approval watch of {name}"))
        return report

    def stop_all(self) -> None:
        for watch in self._watches.values():
            watch.stop()
        self._watches.clear()

    def requested(self, held: HeldRequest) -> None:
        self._queue.append(held)
        if self._prompt is not None:
            self._prompt.set_waiting(len(self._queue))
        self._show_next()

    def answered(self, outcome: ApprovalOutcome) -> None:
        ok = outcome.applied and not outcome.error
        self._report(outcome.summary(), "information" if ok else "warning")

    def _show_next(self) -> None:
        now = self._services.clock()
        while self._prompt is None and self._queue:
            held = self._queue.popleft()
            if held.remaining_s(now=now) <= 0:  # it waited behind another prompt for too long
                self._expired(held)
                continue
            self._prompt = ApprovalScreen(held=held, clock=self._services.clock, waiting=len(self._queue))
            self._screen.app.push_screen(self._prompt, partial(self._answered, held))

    def _answered(self, held: HeldRequest, verdict: ApprovalVerdict | None) -> None:
        self._prompt = None
        watch = self._watches.get(held.workspace)
        if verdict is None:
            self._expired(held)
        elif watch is None:
            self._report(f"{held.workspace} → {held.destination}: {held.workspace} stopped meanwhile; "
                         "the proxy denied it", "warning")
        else:
            watch.answer(held, verdict)
        self._show_next()

    def _expired(self, held: HeldRequest) -> None:
        self._report(f"{held.workspace} → {held.destination}: no answer in time, the proxy denied it", "warning")
