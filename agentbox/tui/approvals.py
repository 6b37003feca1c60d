"""Approvals of held connections, off the UI thread. No Textual here.

In allowlist mode a workspace's egress proxy holds a connection to an unlisted destination
while an approver listens. The TUI is that approver: one `ApprovalWatch` per running
workspace subscribes (NetworkService.approval_requests), hands each held request to the UI,
and delivers the person's answer on the same stream, which only the watch's thread touches.
Every answer given in the TUI goes to the workspace's audit log.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from agentbox.bootstrap import Services
from agentbox.egress.approvals import ApprovalRequest, ApprovalVerdict
from agentbox.egress.client import ApprovalStream
from agentbox.errors import AgentboxError, Cancelled
from agentbox.model.progress import CancelToken

APPROVAL_WAIT_S = 30.0  # how long the proxy holds a connection (its --approval-timeout default)
POLL_S = 0.2  # how often a watch looks for answers to deliver and for a stop
RETRY_S = 2.0  # how soon a watch subscribes again after the proxy went away (a restart)
AUDIT_EVENT = "network.approval"

VERDICT_WORDS = {ApprovalVerdict.ALLOW_ONCE: "allowed once", ApprovalVerdict.ALLOW_ALWAYS: "allowed always",
                 ApprovalVerdict.DENY: "denied"}


@dataclass(frozen=True)
class HeldRequest:
    workspace: str
    request: ApprovalRequest
    deadline: datetime  # when the proxy stops waiting and denies it by itself

    @property
    def destination(self) -> str:
        return f"{self.request.host}:{self.request.port}"

    def remaining_s(self, *, now: datetime) -> int:
        return max(0, math.ceil((self.deadline - now).total_seconds()))


@dataclass(frozen=True)
class ApprovalOutcome:
    held: HeldRequest
    verdict: ApprovalVerdict
    applied: bool  # False: the proxy had already decided (no answer in time, or answered elsewhere)
    error: str = ""  # the answer could not be delivered

    def summary(self) -> str:
        what = f"{self.held.workspace} → {self.held.destination}"
        if self.error:
            return f"{what}: the answer did not reach the proxy ({self.error}); it denies by itself"
        if not self.applied:
            return f"{what}: too late, the proxy had already denied it"
        extra = " (added to the allowlist)" if self.verdict is ApprovalVerdict.ALLOW_ALWAYS else ""
        return f"{what}: {VERDICT_WORDS[self.verdict]}{extra}"


def held_request(*, workspace: str, request: ApprovalRequest, now: datetime,
                 wait_s: float = APPROVAL_WAIT_S) -> HeldRequest:
    try:
        asked = datetime.fromisoformat(request.time)
    except ValueError:
        asked = now
    return HeldRequest(workspace=workspace, request=request, deadline=asked + timedelta(seconds=wait_s))


class ApprovalWatch:
    """Runs (in a thread) until `stop()`: subscribes, passes requests to `on_request`, and
    delivers answers queued by `answer()` (from the UI thread), reporting to `on_outcome`."""

    def __init__(self, *, services: Services, name: str, on_request: Callable[[HeldRequest], object],
                 on_outcome: Callable[[ApprovalOutcome], object],
                 on_crash: Callable[[BaseException], object] | None = None, poll_s: float = POLL_S,
                 retry_s: float = RETRY_S) -> None:
        self.name = name
        self._services = services
        self._on_request = on_request
        self._on_outcome = on_outcome
        self._on_crash = on_crash
        self._poll_s = poll_s
        self._retry_s = retry_s
        self._cancel = CancelToken()
        self._answers: queue.SimpleQueue[tuple[HeldRequest, ApprovalVerdict]] = queue.SimpleQueue()

    @property
    def stopped(self) -> bool:
        return self._cancel.cancelled

    def start(self) -> None:
        """Run on a thread of its own, not a pooled worker: a watch lasts as long as its
        workspace runs, and a few of them would otherwise hold every thread of the pool that
        the dashboard's loads and all long operations wait for."""
        threading.Thread(target=self._run_reporting, name=f"approvals of {self.name}", daemon=True).start()

    def stop(self) -> None:
        self._cancel.cancel()  # the thread ends within one poll; closing the stream denies what is left

    def answer(self, held: HeldRequest, verdict: ApprovalVerdict) -> None:
        self._answers.put((held, verdict))

    def _run_reporting(self) -> None:
        try:
            self.run()
        except Exception as exc:  # a thread's end: the app's boundary shows it (requests left are denied)
            if self._on_crash is None:
                raise
            self._on_crash(exc)

    def run(self) -> None:
        try:
            while not self._cancel.cancelled:
                try:
                    stream = self._services.network.approval_requests(name=self.name)
                except AgentboxError:  # the proxy is (re)starting, or the workspace went away
                    self._deliver(None)
                    self._cancel.wait(self._retry_s)
                    continue
                try:
                    with stream:
                        self._serve(stream)
                except AgentboxError:  # the proxy closed the connection (stopped, restarted)
                    self._cancel.wait(self._retry_s)
        except Cancelled:
            pass

    def _serve(self, stream: ApprovalStream) -> None:
        while not self._cancel.cancelled:
            request = stream.next_request(timeout=self._poll_s)
            if request is not None:
                self._on_request(held_request(workspace=self.name, request=request, now=self._services.clock()))
            self._deliver(stream)

    def _deliver(self, stream: ApprovalStream | None) -> None:
        while True:
            try:
                held, verdict = self._answers.get_nowait()
            except queue.Empty:
                return
            if stream is None:
                self._finish(held, verdict, applied=False, error="the egress proxy is not running")
                continue
            try:
                applied = stream.answer(request_id=held.request.id, verdict=verdict)
            except AgentboxError as exc:
                self._finish(held, verdict, applied=False, error=exc.message)
                raise
            self._finish(held, verdict, applied=applied)

    def _finish(self, held: HeldRequest, verdict: ApprovalVerdict, *, applied: bool, error: str = "") -> None:
        request = held.request
        details = {"host": request.host, "port": request.port, "address": request.address,
                   "method": request.method, "verdict": str(verdict), "applied": applied, "by": "tui"}
        if error:
            details["error"] = error
        try:
            self._services.audit.append(name=self.name, event=AUDIT_EVENT, details=details)
        except AgentboxError as exc:
            error = error or f"not recorded in the audit log: {exc.message}"
        self._on_outcome(ApprovalOutcome(held=held, verdict=verdict, applied=applied, error=error))
