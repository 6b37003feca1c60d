"""What a session has used of its host budgets: egress bytes from the proxy's count, disk
writes and CPU time from the hypervisor's counters less those at the session's start.
Reads only (status views, the supervisor's poll, the receipt): nothing is started or changed."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import TYPE_CHECKING

from agentbox.backends.base import DomainUsage
from agentbox.egress.budget import EGRESS_USAGE_FILE, read_egress_use
from agentbox.errors import AgentboxError
from agentbox.model.budget import BudgetLine, Exceeded, HostBudget, HostUse, OnExceeded
from agentbox.services.context import ServiceContext
from agentbox.stores.records import WorkspaceRecord

if TYPE_CHECKING:
    from agentbox.services.sessions import Session

BUDGETS = ("egress_bytes", "disk_write_bytes", "cpu_seconds")
SET_FLAGS = {"egress_bytes": "--egress", "disk_write_bytes": "--disk-writes", "cpu_seconds": "--cpu"}


def paused_by(*, ctx: ServiceContext, name: str) -> str:
    """The budget that paused the guest of `name`'s session ("" if none did): a read of the
    session file (services/sessions.py writes it) for `list` and `start`."""
    try:
        raw = json.loads(ctx.records.files(name=name).session.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""  # no session (or an unreadable file, which the session commands report)
    tripped = raw.get("tripped", "") if isinstance(raw, dict) else ""
    return tripped if isinstance(tripped, str) else ""


def resume_hint(*, name: str, budget: str) -> str:
    """What to do about a guest its budget paused."""
    return (f"agentbox budget {name} --resume (while it is still exceeded, raise it in the same command, "
            f"e.g. agentbox budget {name} {SET_FLAGS.get(budget, '--cpu')} {_more(budget, 0, 0)} --resume), "
            f"or end the session: agentbox session end {name}")


def raise_hint(*, name: str, exceeded: Exceeded) -> str:
    """How to raise a budget that is still exceeded, with a value above the use."""
    flag = SET_FLAGS.get(exceeded.budget, "--cpu")
    return (f"raise it first: agentbox budget {name} {flag} "
            f"{_more(exceeded.budget, exceeded.used, exceeded.limit)} --resume; "
            f"or end the session: agentbox session end {name}")


def _more(budget: str, used: float, limit: int) -> str:
    """A round value past both the use and the limit (twice the larger), as the CLI takes it."""
    if not (used or limit):
        return "2h" if budget == "cpu_seconds" else "2G"
    target = 2 * max(used, limit)
    if budget == "cpu_seconds":
        return f"{math.ceil(target / 60)}m"
    return f"{math.ceil(target / 10**6)}M"


def domain_usage(*, ctx: ServiceContext, record: WorkspaceRecord) -> DomainUsage | None:
    """The hypervisor's counters; None where the backend cannot read them or the VM is off."""
    if not ctx.backend.capabilities_of(name=record.domain).usage_stats:
        return None
    try:
        return ctx.backend.usage(name=record.domain)
    except AgentboxError:
        return None


def with_budget(session: Session, *, budget: HostBudget, usage: DomainUsage | None) -> Session:
    """The session carrying `budget`, measured from `usage` (the counters now)."""
    return replace(session, egress_bytes=budget.egress_bytes, disk_write_bytes=budget.disk_write_bytes,
                   cpu_seconds=budget.cpu_seconds, on_exceeded=budget.on_exceeded.value,
                   disk_write_base=usage.disk_write_bytes if usage else 0,
                   cpu_base_s=usage.cpu_seconds if usage else 0.0)


def session_budget(session: Session) -> HostBudget:
    return HostBudget(egress_bytes=session.egress_bytes, disk_write_bytes=session.disk_write_bytes,
                      cpu_seconds=session.cpu_seconds, on_exceeded=_on_exceeded(session))


def session_use(*, ctx: ServiceContext, record: WorkspaceRecord, session: Session,
                counters: DomainUsage | None) -> HostUse:
    """The session's use so far; `counters`: the hypervisor's now (domain_usage)."""
    egress = read_egress_use(path=ctx.records.files(name=record.name).egress_dir / EGRESS_USAGE_FILE)
    disk = cpu = None
    if counters is not None:
        # Counters restart with QEMU (a stop and start within the session): then all of
        # what the new QEMU counted is this session's.
        base_disk = session.disk_write_base if counters.disk_write_bytes >= session.disk_write_base else 0
        base_cpu = session.cpu_base_s if counters.cpu_seconds >= session.cpu_base_s else 0.0
        disk, cpu = counters.disk_write_bytes - base_disk, round(counters.cpu_seconds - base_cpu, 3)
    return HostUse(egress_bytes=egress.bytes if egress is not None and egress.session == session.id else 0,
                   disk_write_bytes=disk, cpu_seconds=cpu)


def budget_lines(*, ctx: ServiceContext, record: WorkspaceRecord, session: Session) -> tuple[BudgetLine, ...]:
    """Each budget with a limit, and its use (for receipts and status views)."""
    budget = session_budget(session)
    if budget.unlimited:
        return ()
    use = session_use(ctx=ctx, record=record, session=session, counters=domain_usage(ctx=ctx, record=record))
    lines = []
    for name in BUDGETS:
        limit, used = getattr(budget, name), getattr(use, name)
        if limit:
            lines.append(BudgetLine(budget=name, limit=limit, used=float(used or 0), measured=used is not None,
                                    exceeded=used is not None and used >= limit))
    return tuple(lines)


def _on_exceeded(session: Session) -> OnExceeded:
    try:
        return OnExceeded(session.on_exceeded)
    except ValueError:
        return OnExceeded.END
