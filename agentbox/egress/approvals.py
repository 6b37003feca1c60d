"""Holding a connection to an unlisted destination while a person decides.

Only `not-listed` denials in allowlist mode are held (see policy.py): nothing private,
nothing in mode off. With no approver listening the answer is an immediate deny, so an
unattended workspace never waits; an unanswered request is denied after the timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

log = logging.getLogger(__name__)

RULE_ONCE = "approval:once"
RULE_DENIED = "approval:denied"
RULE_TIMEOUT = "approval:timeout"
RULE_NO_APPROVER = "approval:none"


class ApprovalVerdict(StrEnum):
    ALLOW_ONCE = "allow_once"  # this connection only
    ALLOW_ALWAYS = "allow_always"  # this connection, and host:port joins the live allowlist
    DENY = "deny"


@dataclass(frozen=True)
class ApprovalRequest:
    id: str
    time: str  # UTC ISO 8601
    host: str  # as asked
    address: str  # the address that would be connected to; "" for a name not yet looked up
    # (an unlisted name is resolved only once approved, so asking leaks nothing to DNS)
    port: int
    method: str  # CONNECT or HTTP


@dataclass(frozen=True)
class ApprovalResult:
    """How a hold ended. `rule`/`reason` go into the decision record."""

    verdict: ApprovalVerdict
    rule: str
    reason: str


Approver = Callable[[ApprovalRequest], None]


class ApprovalBroker:
    """Pending requests and the approvers (callbacks, e.g. control-socket clients) that
    are shown them. Runs on the proxy's event loop."""

    def __init__(self, *, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._approvers: list[Approver] = []
        self._pending: dict[str, tuple[ApprovalRequest, asyncio.Future[ApprovalResult]]] = {}
        self._ids = itertools.count(1)

    @property
    def has_approvers(self) -> bool:
        return bool(self._approvers)

    def pending(self) -> tuple[ApprovalRequest, ...]:
        return tuple(request for request, _ in self._pending.values())

    def add_approver(self, *, approver: Approver) -> Callable[[], None]:
        """Register `approver`, show it what is already pending; returns the remover. When
        the last approver goes, whatever it left unanswered is denied at once."""
        self._approvers.append(approver)
        for request in self.pending():
            approver(request)

        def remove() -> None:
            if approver in self._approvers:
                self._approvers.remove(approver)
            if not self._approvers:
                for request in self.pending():
                    self.settle(request_id=request.id, result=ApprovalResult(
                        ApprovalVerdict.DENY, RULE_NO_APPROVER, "the last approver went away"))

        return remove

    async def ask(self, *, host: str, address: str, port: int, method: str) -> ApprovalResult:
        """Hold until an approver answers, the timeout passes, or the hold is settled."""
        if not self._approvers:
            return ApprovalResult(ApprovalVerdict.DENY, RULE_NO_APPROVER,
                                  f"{host}:{port} is not on the allowlist and no approver is listening")
        request = ApprovalRequest(
            id=str(next(self._ids)), time=datetime.now(UTC).isoformat(timespec="milliseconds"),
            host=host, address=address, port=port, method=method,
        )
        future: asyncio.Future[ApprovalResult] = asyncio.get_running_loop().create_future()
        self._pending[request.id] = (request, future)
        for approver in list(self._approvers):
            try:
                approver(request)
            except Exception:  # one broken approver must not stop the others
                log.exception("approver failed")
        try:
            return await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            return ApprovalResult(ApprovalVerdict.DENY, RULE_TIMEOUT,
                                  f"no answer within {self.timeout:g} s for {host}:{port}")
        finally:
            self._pending.pop(request.id, None)

    def answer(self, *, request_id: str, verdict: ApprovalVerdict) -> bool:
        """An approver's answer; False when the request is unknown or already settled."""
        if verdict is ApprovalVerdict.DENY:
            result = ApprovalResult(verdict, RULE_DENIED, "denied by an approver")
        else:
            result = ApprovalResult(verdict, RULE_ONCE, f"{verdict} by an approver")
        return self.settle(request_id=request_id, result=result)

    def settle(self, *, request_id: str, result: ApprovalResult) -> bool:
        """End a hold with `result` (an answer, or the proxy after a policy change)."""
        held = self._pending.get(request_id)
        if held is None or held[1].done():
            return False
        held[1].set_result(result)
        return True
