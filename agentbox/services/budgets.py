"""Per-session host budgets: egress bytes, disk writes, CPU time (`budget:` in the template,
`agentbox budget NAME` per workspace).

The limits are in the workspace record and copied into the session file at session start
(a change during a session goes into both). The egress proxy enforces its own at once (it
cuts mid-transfer); the supervisor polls the rest every second (`check`) and, when one is
reached, `enforce` writes `budget.exceeded` and ends the session as `on_exceeded` says:
`end` is the wall-clock limit's path (receipt, then reset unless the template keeps the
state), `pause` pauses the guest and keeps the session open, marked with the budget that
paused it, until `resume` (`agentbox budget NAME [--cpu 2h] --resume`) finds no budget of the
session exceeded any more, or the session ends.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from agentbox.backends.base import DomainState
from agentbox.errors import InvalidInput
from agentbox.host.locks import workspace_lock
from agentbox.model.budget import BudgetLine, Exceeded, HostBudget, OnExceeded, first_exceeded, format_amount
from agentbox.model.progress import CancelToken
from agentbox.services.budget_use import budget_lines, domain_usage, raise_hint, session_budget, session_use
from agentbox.services.context import ServiceContext
from agentbox.services.lookup import load_ready_record
from agentbox.services.sessions import SessionService

EXCEEDED_EVENT = "budget.exceeded"
PAUSED_EVENT = "budget.paused"
RESUMED_EVENT = "budget.resumed"


@dataclass(frozen=True)
class BudgetStatus:
    workspace: str
    budget: HostBudget  # the workspace's (what the next session gets)
    session: str  # "" outside a session
    lines: tuple[BudgetLine, ...]  # the session's budgets with a limit and their use
    unmeasured: str  # why disk writes and CPU time cannot be measured here ("" when they can)
    paused_by: str = ""  # the budget that paused the guest (on_exceeded: pause), until it is resumed


@dataclass(frozen=True)
class BudgetResumed:
    workspace: str
    session: str
    paused_by: str  # the budget that had paused the guest


class BudgetService:
    def __init__(self, *, ctx: ServiceContext, sessions: SessionService) -> None:
        self._ctx = ctx
        self._sessions = sessions
        # (session, budget, limit) whose budget.exceeded is written: an end may be retried, and
        # after a resume the same session may reach a raised limit again.
        self._audited: set[tuple[str, str, int]] = set()

    def status(self, *, name: str) -> BudgetStatus:
        """A read: the record, the session file, the proxy's count and the hypervisor's counters."""
        ctx = self._ctx
        record = load_ready_record(ctx=ctx, name=name)
        session = self._sessions.current(name=name)
        lines = budget_lines(ctx=ctx, record=record, session=session) if session else ()
        capable = ctx.backend.capabilities_of(name=record.domain).usage_stats
        return BudgetStatus(workspace=name, budget=record.host_budget, session=session.id if session else "",
                            lines=lines, unmeasured="" if capable else
                            f"the {record.backend} backend cannot read disk writes or CPU time here",
                            paused_by=session.tripped if session else "")

    def set(self, *, name: str, egress_bytes: int | None = None, disk_write_bytes: int | None = None,
            cpu_seconds: int | None = None, on_exceeded: OnExceeded | None = None) -> HostBudget:
        """Change the workspace's budgets (None: keep); an open session gets them at once. A
        guest its budget paused stays paused: `resume` lets it run."""
        ctx = self._ctx
        with workspace_lock(paths=ctx.paths, name=name):
            record = load_ready_record(ctx=ctx, name=name)
            old = record.host_budget
            new = HostBudget(
                egress_bytes=old.egress_bytes if egress_bytes is None else egress_bytes,
                disk_write_bytes=old.disk_write_bytes if disk_write_bytes is None else disk_write_bytes,
                cpu_seconds=old.cpu_seconds if cpu_seconds is None else cpu_seconds,
                on_exceeded=old.on_exceeded if on_exceeded is None else on_exceeded)
            if new.disk_write_bytes or new.cpu_seconds:
                if not ctx.backend.capabilities_of(name=record.domain).usage_stats:
                    raise InvalidInput(f"the {record.backend} backend cannot measure disk writes or CPU time here",
                                       hint="set only --egress for this workspace")
            ctx.records.save(record=record.with_host_budget(new))
            session = self._sessions.current(name=name)
            if session is not None:
                self._sessions.save(replace(session, egress_bytes=new.egress_bytes,
                                            disk_write_bytes=new.disk_write_bytes, cpu_seconds=new.cpu_seconds,
                                            on_exceeded=new.on_exceeded.value))
            ctx.audit(name=name).append(event="budget.set", details={
                "egress_bytes": new.egress_bytes, "disk_write_bytes": new.disk_write_bytes,
                "cpu_seconds": new.cpu_seconds, "on_exceeded": new.on_exceeded.value,
                "session": session.id if session else None})
            return new

    def check(self, name: str) -> tuple[str, Exceeded] | None:
        """The supervisor's poll: (session id, the budget reached) or None. A read."""
        session = self._sessions.current(name=name)
        if session is None or session.tripped:
            return None
        budget = session_budget(session)
        if budget.unlimited:
            return None
        record = load_ready_record(ctx=self._ctx, name=name)
        counters = (domain_usage(ctx=self._ctx, record=record)
                    if budget.disk_write_bytes or budget.cpu_seconds else None)
        exceeded = first_exceeded(use=session_use(ctx=self._ctx, record=record, session=session,
                                                  counters=counters), budget=budget)
        return None if exceeded is None else (session.id, exceeded)

    def enforce(self, name: str, session_id: str, exceeded: Exceeded) -> None:
        """The budget was reached: audit it, then end the session (or pause the guest)."""
        ctx = self._ctx
        session = self._sessions.current(name=name)
        if session is None or session.id != session_id or session.tripped:
            return
        action = session_budget(session).on_exceeded
        once = (session_id, exceeded.budget, exceeded.limit)
        if once not in self._audited:  # once, though a busy workspace makes the end wait and retry
            ctx.audit(name=name).append(event=EXCEEDED_EVENT, details={
                "session": session_id, "budget": exceeded.budget, "used": exceeded.used, "limit": exceeded.limit,
                "action": action.value})
            self._audited.add(once)
        if action is OnExceeded.PAUSE:
            with workspace_lock(paths=ctx.paths, name=name):
                record = load_ready_record(ctx=ctx, name=name)
                ctx.backend.pause(name=record.domain)
                self._sessions.save(replace(session, tripped=exceeded.budget))
            ctx.audit(name=name).append(event=PAUSED_EVENT, details={
                "session": session_id, "budget": exceeded.budget})
            return
        self._sessions.end(name=name, reason=exceeded.describe(), session_id=session_id,
                           on_progress=lambda _: None, cancel=CancelToken())

    def resume(self, *, name: str) -> BudgetResumed:
        """Let a guest its budget paused run again, unless a budget of the session is still
        exceeded (it would be paused again at the next poll): raise that one first."""
        ctx = self._ctx
        with workspace_lock(paths=ctx.paths, name=name):
            record = load_ready_record(ctx=ctx, name=name)
            session = self._sessions.current(name=name)
            if session is None or not session.tripped:
                why = "it has no session" if session is None else "its session's budgets did not pause it"
                raise InvalidInput(f"workspace {name!r} is not paused by a budget ({why})",
                                   hint=f"agentbox budget {name} shows its budgets; agentbox list, its state")
            info = ctx.backend.get(name=record.domain)
            if info is None or info.state not in (DomainState.RUNNING, DomainState.PAUSED):
                raise InvalidInput(f"workspace {name!r} is not running (its {session.tripped} budget paused it, "
                                   "then it was stopped)",
                                   hint=f"agentbox start {name}, then agentbox budget {name} --resume")
            budget = session_budget(session)
            counters = domain_usage(ctx=ctx, record=record) if budget.disk_write_bytes or budget.cpu_seconds else None
            exceeded = first_exceeded(use=session_use(ctx=ctx, record=record, session=session, counters=counters),
                                      budget=budget)
            if exceeded is not None:
                which = f"that paused {name!r}" if exceeded.budget == session.tripped else \
                    f"of {name!r} (its {session.tripped} budget paused it)"
                raise InvalidInput(
                    f"the {exceeded.budget} budget {which} is still exceeded: this session used "
                    f"{format_amount(exceeded.budget, exceeded.used)} of "
                    f"{format_amount(exceeded.budget, exceeded.limit)}; resuming would pause it again",
                    hint=raise_hint(name=name, exceeded=exceeded))
            ctx.backend.resume(name=record.domain)
            self._sessions.save(replace(session, tripped=""))
        ctx.audit(name=name).append(event=RESUMED_EVENT, details={"session": session.id, "budget": session.tripped})
        return BudgetResumed(workspace=name, session=session.id, paused_by=session.tripped)
