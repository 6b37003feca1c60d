"""The decision log: one frozen record per client connection, handed to a sink (the JSONL
file) and to live subscribers (control-socket clients), with a short memory of the last
records so a new subscriber can see what just happened."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from agentbox.egress.policy import Decision

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    COMPLETED = "completed"  # relayed until one side closed
    DENIED = "denied"  # refused by the policy or an approver
    CUT = "cut"  # closed by a policy change or proxy shutdown
    UNRESOLVED = "unresolved"  # the name did not resolve
    UPSTREAM_FAILED = "upstream-failed"  # no connection to the destination, or it broke
    BAD_REQUEST = "bad-request"  # malformed, too large, too slow
    BUSY = "busy"  # over the connection limit


@dataclass(frozen=True)
class ConnectionRecord:
    time: str  # UTC ISO 8601, when the client connected
    host: str  # the destination as asked ("" when the request was unreadable)
    address: str  # the resolved address judged / connected to ("" when none)
    port: int
    method: str  # CONNECT or HTTP ("" when the request was unreadable)
    decision: Decision
    outcome: Outcome
    bytes_up: int  # client to destination
    bytes_down: int  # destination to client
    duration_s: float
    error: str = ""  # what went wrong, when something did


RecordSink = Callable[[ConnectionRecord], None]
Subscriber = Callable[[ConnectionRecord], None]


class DecisionLog:
    def __init__(self, *, sink: RecordSink | None = None, keep: int = 500) -> None:
        self._sink = sink
        self._recent: deque[ConnectionRecord] = deque(maxlen=keep)
        self._subscribers: list[Subscriber] = []

    def emit(self, record: ConnectionRecord) -> None:
        """Record one connection. A failing sink or subscriber is logged, never raised: the
        proxy must keep serving, and the record still reaches everyone else."""
        self._recent.append(record)
        for target in ([self._sink] if self._sink else []) + list(self._subscribers):
            try:
                target(record)
            except Exception:
                log.exception("decision record consumer failed")

    def subscribe(self, *, subscriber: Subscriber, last: int = 0) -> Callable[[], None]:
        """Send `subscriber` the last `last` records now, then every new one; returns the
        unsubscribe function."""
        for record in self.recent(last=last):
            subscriber(record)
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def recent(self, *, last: int) -> tuple[ConnectionRecord, ...]:
        if last <= 0:
            return ()
        return tuple(self._recent)[-last:]
