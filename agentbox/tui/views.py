"""What the screens show, gathered from the services in a worker thread.

Plain frozen data and formatting, no Textual: the loaders run off the UI thread (they read
records, audit logs and ask the backend), and widgets only ever receive these values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from agentbox.audit import DECISION_EVENT, HEAD_EVENT, AuditRecord, RecentRecords, tail_records
from agentbox.bootstrap import Services
from agentbox.egress.records import ConnectionRecord
from agentbox.errors import AgentboxError
from agentbox.model.budget import format_amount
from agentbox.model.template import NetworkMode, Template
from agentbox.model.workspace import StandbyState, Workspace, WorkspaceState
from agentbox.services.budget_use import SET_FLAGS
from agentbox.services.budgets import BudgetStatus
from agentbox.services.outbox import OutboxEntry
from agentbox.services.outbox_limit import OutboxUsage
from agentbox.services.shares import GUEST_SHARES, ShareStatus
from agentbox.stores.ssh_config import alias

RECENT_EVENTS = 5
RECENT_DECISIONS = 3
RECENT_KEYS = ("target", "label", "path", "how", "reason", "tag", "mode", "verdict", "host")
# Decisions are shown in the details' own network row, not among recent events; the trail's
# noted heads are bookkeeping for `audit verify`.
OWN_ROWS = (DECISION_EVENT, HEAD_EVENT)
NETWORK_MEANING = {NetworkMode.OFF: "no network at all", NetworkMode.ALLOWLIST: "only listed destinations",
                   NetworkMode.LEARN: "any public address, recorded to propose an allowlist",
                   NetworkMode.OPEN: "any public address"}
NEVER = "never"
T = TypeVar("T")
D = TypeVar("D")


@dataclass(frozen=True)
class WorkspaceRow:
    name: str
    state: WorkspaceState
    template: str
    network: str  # off | allowlist | open
    last_reset: str
    created: str
    agent: str = "-"  # the template's agent(s), "-" for a plain VM


@dataclass(frozen=True)
class WorkspaceDetails:
    name: str
    state: WorkspaceState
    problem: str
    resources: str
    ssh_commands: tuple[str, ...]
    clean_state: str
    session: str
    in_session: bool
    checkpoints: tuple[str, ...]
    recent_events: tuple[str, ...]
    network: NetworkMode | None = None  # None when the policy cannot be read
    egress: str = ""  # what the guest can reach right now, in plain words
    allowlist: tuple[str, ...] = ()
    recent_decisions: tuple[str, ...] = ()
    shares: tuple[str, ...] = ()
    outbox: str = ""
    needs_repair: bool = False  # running without its supervisor: no egress until repaired
    agents: tuple[str, ...] = ()  # the template's agents: the agent terminal (t) starts the first
    budgets: tuple[str, ...] = ()  # the session's use of each host budget against its limit
    paused_by: str = ""  # the budget that paused the guest (resume: u)

    @property
    def resume_hint(self) -> str:
        flag = SET_FLAGS.get(self.paused_by, "--cpu")
        return f"agentbox budget {self.name} {flag} … --resume raises it and resumes"

    @property
    def ready(self) -> bool:
        """Whether lifecycle actions apply (a broken or half-made workspace can only be destroyed)."""
        return self.state in (WorkspaceState.RUNNING, WorkspaceState.STOPPED, WorkspaceState.PAUSED)


@dataclass(frozen=True)
class NetLine:
    time: str
    verdict: str  # "✓ allowed" / "✗ denied": words and a mark, not colour alone
    allowed: bool
    destination: str
    rule: str
    outcome: str


@dataclass(frozen=True)
class DashboardData:
    rows: tuple[WorkspaceRow, ...]
    details: WorkspaceDetails | None


@dataclass(frozen=True)
class AuditLine:
    seq: int
    time: str
    event: str
    details: str


class RecentEvents:
    """Each workspace's recent audit events, kept between refreshes so that a refresh reads
    only what was appended since the last one (see RecentRecords)."""

    def __init__(self) -> None:
        self._logs: dict[Path, RecentRecords] = {}

    def of(self, path: Path) -> RecentRecords:
        if path not in self._logs:
            self._logs[path] = RecentRecords(path=path, count=RECENT_EVENTS, skip_events=OWN_ROWS)
        return self._logs[path]


def load_dashboard(*, services: Services, selected: str | None,
                   recent: RecentEvents | None = None) -> DashboardData:
    """All rows, plus the details of `selected` (or of the first workspace)."""
    workspaces = services.workspaces.list()
    templates = _templates(services)
    now = services.clock()
    rows = tuple(_row(services=services, workspace=w, templates=templates, now=now) for w in workspaces)
    names = [w.name for w in workspaces]
    chosen = selected if selected in names else (names[0] if names else None)
    by_name = {w.name: w for w in workspaces}
    details = load_details(services=services, workspace=by_name[chosen], recent=recent) if chosen else None
    return DashboardData(rows=rows, details=details)


def load_details(*, services: Services, workspace: Workspace, recent: RecentEvents | None = None) -> WorkspaceDetails:
    name = workspace.name
    record = _quietly(lambda: services.workspaces.record(name=name), None)
    if record is None:
        clean = "unknown"
    elif record.clean_snapshot:
        clean = f"{record.clean_snapshot} (disk and RAM): a reset takes seconds"
    else:
        clean = record.clean_fallback or "none: a reset recreates the disk and cold boots"
    clean += {StandbyState.OFF: "", StandbyState.READY: "; standby copy ready: the next reset is a swap",
              StandbyState.WAITING: "; standby on: its copy is made at the next reset"}[workspace.standby]
    session = _quietly(lambda: services.sessions.current(name=name), None)
    ready = workspace.state in (WorkspaceState.RUNNING, WorkspaceState.STOPPED, WorkspaceState.PAUSED)
    checkpoints = _quietly(lambda: tuple(c.label for c in services.snapshots.checkpoints(name=name)), ()) \
        if ready else ()
    res = workspace.resources
    status = _quietly(lambda: services.network.show(name=name), None) if ready else None
    agents = _quietly(lambda: tuple(a.name for a in services.agents.agents(name=name)), ()) if ready else ()
    return WorkspaceDetails(
        name=name, state=workspace.state, problem=workspace.problem,
        # The backend too: a workspace stays on the one that made it, whatever the settings say now.
        resources=f"{res.vcpus} vCPU · {res.memory_mib} MiB RAM · {res.disk_gib} GiB disk · {workspace.backend.value}"
                  + (f" on {workspace.host}" if workspace.host else ""),
        ssh_commands=(f"agentbox ssh {name}", f"ssh {alias(name)}"),
        clean_state=clean,
        session=_session_text(session.started, session.deadline) if session else "none",
        in_session=session is not None,
        checkpoints=checkpoints,
        recent_events=tuple(_event_text(rec) for rec in recent_records(services=services, name=name, recent=recent)),
        network=status.mode if status else None,
        egress=status.egress if status else "",
        needs_repair=bool(status and status.needs_repair),
        allowlist=status.allowlist if status else (),
        recent_decisions=tuple(_decision_text(r) for r in recent_decisions(services=services, name=name))
        if ready else (),
        shares=tuple(share_text(s) for s in _quietly(lambda: services.shares.list(name=name), ())) if ready else (),
        outbox=outbox_text(_quietly(lambda: services.outbox.list(name=name), ())) if ready else "",
        agents=agents,
        budgets=_quietly(lambda: budget_texts(services.budgets.status(name=name)), ()) if ready else (),
        paused_by=workspace.paused_by,
    )


def budget_texts(status: BudgetStatus) -> tuple[str, ...]:
    """Use against limit in a session; outside one, the limits the next session gets."""
    if status.session:
        return tuple(line.describe() for line in status.lines)
    budget = status.budget
    return tuple(f"{name}: {format_amount(name, getattr(budget, name))} per session"
                 for name in ("egress_bytes", "disk_write_bytes", "cpu_seconds") if getattr(budget, name))


def recent_records(*, services: Services, name: str, limit: int = RECENT_EVENTS,
                   recent: RecentEvents | None = None) -> tuple[AuditRecord, ...]:
    # From the end of the log, not a scan of it: a refresh costs about the same at any size.
    path = services.audit.log_path(name=name)
    if recent is not None and limit <= RECENT_EVENTS:
        return _quietly(lambda: recent.of(path).get()[-limit:], ())
    return _quietly(lambda: tail_records(path=path, count=limit, skip_events=OWN_ROWS), ())


def recent_decisions(*, services: Services, name: str,
                     limit: int = RECENT_DECISIONS) -> tuple[ConnectionRecord, ...]:
    return _quietly(lambda: services.network.recent(name=name, count=limit), ())


def net_line(record: ConnectionRecord) -> NetLine:
    allowed = record.decision.allowed
    where = f"{record.host or '?'}:{record.port}" + (f" ({record.address})" if record.address
                                                     and record.address != record.host else "")
    return NetLine(time=_clock_time(record.time, seconds=True), verdict="✓ allowed" if allowed else "✗ denied",
                   allowed=allowed, destination=where, rule=record.decision.rule, outcome=str(record.outcome))


def share_text(status: ShareStatus) -> str:
    share = status.share
    kind = "live" if status.live else "a copy"
    return f"{share.tag} ← {home_relative(share.source)} ({share.mechanism.value}, {kind}" + (
        ")" if status.attached else ", not attached now)")


def home_relative(path: str) -> str:
    """/home/me/code → ~/code (shorter, and what people recognise)."""
    home = Path.home()
    try:
        return "~/" + str(Path(path).relative_to(home))
    except ValueError:
        return path


def share_place(tag: str) -> str:
    return f"{GUEST_SHARES}/{tag}"


def outbox_text(entries: tuple[OutboxEntry, ...]) -> str:
    files = [e for e in entries if e.kind == "file"]
    if not entries:
        return "empty"
    others = len(entries) - len(files) - sum(e.kind == "dir" for e in entries)
    return f"{len(files)} file(s), {size_text(sum(e.size for e in files))}" + (
        f" + {others} not exportable" if others else "")


def outbox_usage_text(usage: OutboxUsage) -> str:
    if not usage.enforced:
        return f"Used {size_text(usage.used_bytes)}, no size limit: {usage.note}"
    percent = 100 * usage.used_bytes / usage.limit_bytes
    full = " Full: the agent's writes fail (no space left) until you export and clear." if percent >= 99 else ""
    return (f"Used {size_text(usage.used_bytes)} of {size_text(usage.limit_bytes)} ({percent:.0f}%), "
            f"a limit enforced on the host.{full}")


def size_text(size: int) -> str:
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            return f"{size} B" if size < 1024 else f"{value:.1f} {unit}"
    return f"{size} B"


def audit_line(record: AuditRecord) -> AuditLine:
    return AuditLine(seq=record.seq, time=_local(record.ts).strftime("%Y-%m-%d %H:%M:%S"), event=record.event,
                     details=summarize_details(record.details))


def summarize_details(details: Mapping[str, Any], *, width: int = 80) -> str:
    text = " ".join(f"{key}={_value(value)}" for key, value in details.items() if value not in (None, "", [], {}))
    return text if len(text) <= width else text[: width - 1] + "…"


def relative_time(iso: str, *, now: datetime) -> str:
    """'never', 'just now', '5 min ago', '3 h ago', '2 d ago' (falls back to the raw text)."""
    if not iso:
        return NEVER
    try:
        then = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    age = now - then
    if age < timedelta(minutes=1):
        return "just now"
    if age < timedelta(hours=1):
        return f"{int(age.total_seconds() // 60)} min ago"
    if age < timedelta(days=1):
        return f"{int(age.total_seconds() // 3600)} h ago"
    return f"{age.days} d ago"


def short_time(iso: str) -> str:
    try:
        return _local(datetime.fromisoformat(iso)).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso or "-"


def short_date(iso: str) -> str:
    try:
        return _local(datetime.fromisoformat(iso)).strftime("%Y-%m-%d")
    except ValueError:
        return iso or "-"


def _row(*, services: Services, workspace: Workspace, templates: Mapping[str, Template],
         now: datetime) -> WorkspaceRow:
    record = _quietly(lambda: services.workspaces.record(name=workspace.name), None)
    # The workspace's own policy (what its proxy enforces); else what its template starts with.
    policy = _quietly(lambda: services.network.policy(name=workspace.name), None)
    template = templates.get(workspace.template)
    mode = policy.mode if policy else (template.policy.network if template else NetworkMode.OFF)
    return WorkspaceRow(name=workspace.name, state=workspace.state, template=workspace.template,
                        network=mode.value,
                        last_reset=relative_time(record.last_reset if record else "", now=now),
                        created=short_date(workspace.created), agent=agent_cell(template))


def agent_cell(template: Template | None) -> str:
    """The dashboard's agent column: which agent(s) the workspace's template runs."""
    if template is None or not template.agents:
        return "-"
    return ", ".join(agent.name for agent in template.agents)


def _templates(services: Services) -> dict[str, Template]:
    # A broken user template must not take the whole dashboard down: rows just say "off".
    return {t.name: t for t in _quietly(services.images.templates, ())}


def _session_text(started: str, deadline: str) -> str:
    since = _clock_time(started)
    return f"since {since}, ends {_clock_time(deadline)}" if deadline else f"since {since}, no time limit"


def _clock_time(iso: str, *, seconds: bool = False) -> str:
    try:
        return _local(datetime.fromisoformat(iso)).strftime("%H:%M:%S" if seconds else "%H:%M")
    except ValueError:
        return iso


def _decision_text(record: ConnectionRecord) -> str:
    line = net_line(record)
    mark = "✓" if line.allowed else "✗"
    return f"{_clock_time(record.time)} {mark} {record.host or '?'}:{record.port}" + (
        "" if line.allowed else f" ({line.rule})")


def _event_text(record: AuditRecord) -> str:
    # The few details that say what happened; the audit screen shows all of them.
    summary = summarize_details({k: record.details[k] for k in RECENT_KEYS if k in record.details}, width=40)
    return f"{_local(record.ts).strftime('%H:%M')} {record.event}" + (f" {summary}" if summary else "")


def _local(moment: datetime) -> datetime:
    return moment.astimezone() if moment.tzinfo else moment


def _value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _quietly(read: Callable[[], T], default: D) -> T | D:
    """A detail that cannot be read (a damaged file) is shown as missing, not as a crash."""
    try:
        return read()
    except (AgentboxError, OSError):
        return default
