"""Sessions: from `session start` until the user (or a time limit) ends it, then a reset.

A session with a time limit is ended by the workspace's supervisor (services/supervisor.py),
which outlives the command that started it, so the workspace is reset even if nobody is
watching; after a host restart, the supervisor that `start` brings up ends an overdue one. `run` is a whole session
in one call: start, run one command, end, for a named or a throw-away workspace.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from agentbox.backends.base import DomainState
from agentbox.config.atomic_file import write_atomically
from agentbox.errors import AgentboxError, Cancelled, InvalidInput, NotFound
from agentbox.model.names import validate_workspace_name
from agentbox.model.progress import CancelToken, ProgressCallback
from agentbox.services.anchoring import anchor_trail
from agentbox.services.budget_use import budget_lines, domain_usage, with_budget
from agentbox.services.context import ServiceContext
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.services.gateway_access import GatewayAccess
from agentbox.host.locks import workspace_lock
from agentbox.host.process_identity import ProcessIdentity, current_identity, is_alive
from agentbox.services.lookup import load_ready_record
from agentbox.services.receipts import Receipt, ReceiptService
from agentbox.services.snapshots import RestoreOutcome, SnapshotService
from agentbox.services.workspaces import WorkspaceService

TIMED_OUT_EXIT = 124  # what timeout(1) returns, so scripts can tell a time limit apart
MAX_MINUTES = 7 * 24 * 60


@dataclass(frozen=True)
class Session:
    id: str
    name: str
    started: str  # ISO 8601 UTC
    deadline: str = ""  # ISO 8601 UTC; "" when unlimited
    timer: int = 0  # unused: session files of older versions carry it
    # A `run` ends its own session at the deadline (it must stop its command and report
    # 124) while it lives; the supervisor ends it only once that process is gone.
    owner_pid: int = 0
    owner_start: int = 0
    # The host budgets (0: no limit; services/budgets.py), and the hypervisor's counters at
    # the start, which the session's use is measured from. The egress proxy reads
    # `id` and `egress_bytes` from this file.
    egress_bytes: int = 0
    disk_write_bytes: int = 0
    cpu_seconds: int = 0
    on_exceeded: str = "end"
    disk_write_base: int = 0
    cpu_base_s: float = 0.0
    tripped: str = ""  # the budget that paused the guest (on_exceeded: pause): not acted on again

    @property
    def owner(self) -> ProcessIdentity | None:
        return ProcessIdentity(pid=self.owner_pid, start=self.owner_start) if self.owner_pid else None


@dataclass(frozen=True)
class SessionEnd:
    session: Session
    ended: str
    duration_s: float
    reason: str
    reset: RestoreOutcome | None  # None when the policy keeps the state (or it was a throw-away)
    receipt: Receipt | None = None  # None only when it could not be stored (receipt_error says why)
    receipt_error: str = ""


@dataclass(frozen=True)
class RunOutcome:
    workspace: str
    exit_code: int
    timed_out: bool
    temporary: bool
    end: SessionEnd


class SessionService:
    def __init__(self, *, ctx: ServiceContext, workspaces: WorkspaceService, snapshots: SnapshotService) -> None:
        self._ctx = ctx
        self._workspaces = workspaces
        self._snapshots = snapshots
        self._receipts = ReceiptService(ctx=ctx)

    def current(self, *, name: str) -> Session | None:
        path = self._ctx.records.files(name=name).session
        try:
            return Session(**json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise AgentboxError(f"{path}: unreadable session file ({exc})",
                                hint=f"agentbox session end {name} ends it anyway") from None

    def start(self, *, name: str, max_minutes: float | None, on_progress: ProgressCallback,
              cancel: CancelToken, owned: bool = False) -> Session:
        """With `owned`, this process ends the session itself (a `run`), unless it dies first."""
        ctx = self._ctx
        if max_minutes is not None and not 0 < max_minutes <= MAX_MINUTES:
            raise InvalidInput(f"--max-minutes {max_minutes:g} is out of range (0, {MAX_MINUTES}]")
        record = load_ready_record(ctx=ctx, name=name)
        if (active := self.current(name=name)) is not None:
            raise InvalidInput(f"workspace {name!r} is already in a session (since {active.started})",
                               hint=f"agentbox session end {name}")
        info = ctx.backend.get(name=record.domain)
        if info is None or info.state is not DomainState.RUNNING:
            self._workspaces.start(name=name, on_progress=on_progress, cancel=cancel)
        with workspace_lock(paths=ctx.paths, name=name):
            now = ctx.clock()
            owner = current_identity() if owned else None
            session = Session(id=secrets.token_hex(6), name=name, started=_iso(now),
                              deadline=_iso(now + timedelta(minutes=max_minutes)) if max_minutes else "",
                              owner_pid=owner.pid if owner else 0, owner_start=owner.start if owner else 0)
            session = with_budget(session, budget=record.host_budget, usage=domain_usage(ctx=ctx, record=record))
            self._save(session)
            self._receipts.begin(name=name, session_id=session.id)
            # The session's own token: whatever the guest held before is dead from now on.
            GatewayAccess(ctx=ctx).mint_and_install(record=record, session=session.id, cancel=cancel)
            ctx.audit(name=name).append(event="session.started", details={
                "session": session.id, "max_minutes": max_minutes, "deadline": session.deadline})
            return session

    def end(self, *, name: str, reason: str, on_progress: ProgressCallback, cancel: CancelToken,
            session_id: str | None = None, reset: bool = True, force_reset: bool = False) -> SessionEnd | None:
        """End the session (and reset unless the policy says otherwise, or `force_reset`: an
        explicit reset). With `session_id`, only that session: None if it already ended."""
        ctx = self._ctx
        with workspace_lock(paths=ctx.paths, name=name):
            session = self.current(name=name)
            if session is None:
                if session_id is not None:
                    return None
                raise InvalidInput(f"workspace {name!r} is not in a session", hint=f"agentbox session start {name}")
            if session_id is not None and session.id != session_id:
                return None
            record = load_ready_record(ctx=ctx, name=name)
            now = ctx.clock()
            receipt, receipt_error = None, ""
            try:  # before the reset wipes what it describes
                receipt = self._receipts.finish(record=record, session_id=session.id, started=session.started,
                                                ended=now, reason=reason,
                                                budgets=budget_lines(ctx=ctx, record=record, session=session))
            except Exception as exc:  # noqa: BLE001 - whatever goes wrong with the receipt, the reset must still happen
                receipt_error = exc.message if isinstance(exc, AgentboxError) else f"{type(exc).__name__}: {exc}"
            outcome = None
            # The session's token dies with it; a reset mints the next one, else the next
            # session start (or start, or reset) does.
            GatewayAccess(ctx=ctx).revoke(name=name)
            try:
                if force_reset or (reset and record.reset_after_session):
                    outcome = self._snapshots.reset_locked(record=record, on_progress=on_progress, cancel=cancel)
            finally:
                # Only now: whoever sees the session gone also sees the workspace reset.
                ctx.records.files(name=name).session.unlink(missing_ok=True)
            ended = SessionEnd(session=session, ended=_iso(now), reason=reason, reset=outcome, receipt=receipt,
                               receipt_error=receipt_error,
                               duration_s=(now - datetime.fromisoformat(session.started)).total_seconds())
            ctx.audit(name=name).append(event="session.ended", details={
                "session": session.id, "reason": reason, "duration_s": round(ended.duration_s, 3),
                "reset": outcome.path.value if outcome else None})
            anchor_trail(ctx=ctx, name=name, why="session.ended")
            return ended

    def run(self, *, argv: Sequence[str], name: str | None, template: str | None, max_minutes: float | None,
            stdout: Callable[[bytes], None], stderr: Callable[[bytes], None], on_progress: ProgressCallback,
            cancel: CancelToken) -> RunOutcome:
        """A disposable run: a session around one command, ended with a reset (or, for a
        throw-away workspace, with its destruction) however the command ends."""
        if not argv:
            raise InvalidInput("no command given", hint="agentbox run -- COMMAND [ARGS...]")
        temporary = name is None
        # `--name ""` is a bad name, not a throw-away workspace that would then be kept.
        name = validate_workspace_name(name) if name is not None else f"run-{secrets.token_hex(3)}"
        if temporary or not self._exists(name):
            create_workspace(ctx=self._ctx, request=CreateRequest(name=name, template=template),
                             on_progress=on_progress, cancel=cancel)
        try:
            self.start(name=name, max_minutes=max_minutes, on_progress=on_progress, cancel=cancel, owned=True)
            code, timed_out = self._run_limited(name=name, argv=argv, stdout=stdout, stderr=stderr,
                                                max_minutes=max_minutes, cancel=cancel)
        except BaseException:
            self._finish(name=name, temporary=temporary, reason="interrupted", on_progress=on_progress)
            raise
        end = self._finish(name=name, temporary=temporary,
                           reason="time limit reached" if timed_out else "command finished", on_progress=on_progress)
        return RunOutcome(workspace=name, exit_code=code, timed_out=timed_out, temporary=temporary, end=end)

    def _run_limited(self, *, name: str, argv: Sequence[str], stdout: Callable[[bytes], None],
                     stderr: Callable[[bytes], None], max_minutes: float | None,
                     cancel: CancelToken) -> tuple[int, bool]:
        expired = threading.Event()

        def on_deadline() -> None:
            expired.set()
            cancel.cancel()  # the run's own token: nothing else uses it after the command

        timer = threading.Timer(max_minutes * 60, on_deadline) if max_minutes else None
        if timer:
            timer.daemon = True
            timer.start()
        try:
            return self._workspaces.exec(name=name, argv=argv, stdout=stdout, stderr=stderr,
                                         cancel=cancel).exit_code, False
        except Cancelled:
            if expired.is_set():
                return TIMED_OUT_EXIT, True
            raise
        finally:
            if timer:
                timer.cancel()

    def _finish(self, *, name: str, temporary: bool, reason: str, on_progress: ProgressCallback) -> SessionEnd:
        # A fresh token: the run's own may be the one that was cancelled.
        end = None
        if self.current(name=name) is not None:
            end = self.end(name=name, reason=reason, on_progress=on_progress, cancel=CancelToken(),
                           reset=not temporary)
        if temporary:
            self._workspaces.destroy(name=name, on_progress=on_progress)
        if end is None:
            raise AgentboxError(f"the session of {name!r} ended before the run did")
        return end

    def _exists(self, name: str) -> bool:
        try:
            self._workspaces.get(name=name)
        except NotFound:
            return False
        return True

    def save(self, session: Session) -> None:
        """Replace the session file (services/budgets.py: new limits, a tripped budget)."""
        self._save(session)

    def _save(self, session: Session) -> None:
        write_atomically(path=self._ctx.records.files(name=session.name).session,
                         data=(json.dumps(asdict(session)) + "\n").encode())

    def reset_in_session(self, name: str, session_id: str, on_progress: ProgressCallback,
                         cancel: CancelToken) -> RestoreOutcome | None:
        """SnapshotService.reset's way to end a running session first (see bootstrap)."""
        end = self.end(name=name, reason="reset", session_id=session_id, force_reset=True,
                       on_progress=on_progress, cancel=cancel)
        return None if end is None else end.reset

    def expire(self, name: str, session_id: str) -> None:
        """The supervisor's call when the session's deadline has passed."""
        self.end(name=name, reason="time limit reached", session_id=session_id, on_progress=lambda _: None,
                 cancel=CancelToken())

    def deadline(self, name: str) -> tuple[str, str] | None:
        """(session id, deadline) of the running session for the supervisor to enforce; None
        without one, or while the `run` that owns it lives (it enforces its own)."""
        session = self.current(name=name)
        if session is None or is_alive(session.owner):
            return None
        return session.id, session.deadline


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")

