"""Workspace lifecycle after create: list, start, stop, destroy, exec, SSH access."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from agentbox.audit import remove_anchors, remove_log
from agentbox.backends.base import DomainInfo, DomainState
from agentbox.errors import AgentboxError, GuestError, InvalidInput, NotFound
from agentbox.model.names import validate_workspace_name
from agentbox.model.progress import CancelToken, Progress, ProgressCallback
from agentbox.model.recording import RecordingKind
from agentbox.model.redaction import redact_argv
from agentbox.model.workspace import BackendKind, StandbyState, Workspace, WorkspaceState
from agentbox.model.template import Resources
from agentbox.services.anchoring import anchor_trail
from agentbox.services.budget_use import paused_by, resume_hint
from agentbox.services.context import ServiceContext
from agentbox.services.guest_ready import wait_for_guest
from agentbox.host.locks import is_locked, workspace_lock
from agentbox.services.lookup import load_ready_record
from agentbox.services.outbox_limit import OutboxLimit
from agentbox.services.session_recording import ActiveRecording, recording
from agentbox.stores.receipts import ReceiptStore
from agentbox.stores.evidence import EvidenceStore
from agentbox.stores.recordings import RecordingStore
from agentbox.services.attachments import Attachments
from agentbox.host.storage import remove_storage
from agentbox.services.standby import Standby
from agentbox.stores.records import Phase, WorkspaceRecord, WorkspaceStorage, other_slot
from agentbox.services.ssh_access import ssh_argv, ssh_target
from agentbox.stores.ssh_config import ManagedSshConfig, write_managed_ssh_config

_DOMAIN_STATES = {
    DomainState.RUNNING: WorkspaceState.RUNNING,
    DomainState.STOPPED: WorkspaceState.STOPPED,
    DomainState.PAUSED: WorkspaceState.PAUSED,
    DomainState.CRASHED: WorkspaceState.STOPPED,
    DomainState.OTHER: WorkspaceState.STOPPED,
}
STOP_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    duration_s: float


class WorkspaceService:
    def __init__(self, *, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._attachments = Attachments(ctx=ctx)
        self._standby = Standby(ctx=ctx)

    # -- looking up -------------------------------------------------------------------

    def list(self) -> tuple[Workspace, ...]:
        ctx = self._ctx
        domains: dict[str, list[DomainInfo]] = {}
        for info in ctx.backend.list_domains():  # with standby, two per workspace
            domains.setdefault(info.metadata.workspace, []).append(info)
        names = sorted(set(domains) | set(ctx.records.names()))
        return tuple(self._describe(name=n, domains=domains.get(n, [])) for n in names)

    def get(self, *, name: str) -> Workspace:
        validate_workspace_name(name)
        ctx = self._ctx
        try:
            record = ctx.records.load(name=name)
        except AgentboxError:
            record = None
        domain = ctx.backend.get(name=record.domain if record else ctx.domain_name(name=name))
        if domain is None and name not in ctx.records.names():
            raise NotFound(f"no workspace named {name!r}", hint="agentbox list shows your workspaces")
        return self._describe(name=name, domains=[domain] if domain else [])

    def record(self, *, name: str) -> WorkspaceRecord | None:
        """What agentbox keeps about `name` (clean snapshot, last reset), None if nothing."""
        return self._ctx.records.load(name=name)

    def _describe(self, *, name: str, domains: builtins.list[DomainInfo]) -> Workspace:
        ctx = self._ctx
        try:
            record = ctx.records.load(name=name)
        except AgentboxError as exc:
            record, problem = None, exc.message
        else:
            problem = ""
        # The one that runs is the record's; without a record, the first slot's.
        wanted = record.domain if record else ctx.domain_name(name=name)
        domain = next((d for d in domains if d.name == wanted), None if record else next(iter(domains), None))
        state, problem = _state(name=name, record=record, domain=domain, busy=is_locked(paths=ctx.paths, name=name),
                                problem=problem)
        if record is not None:
            budget = paused_by(ctx=ctx, name=name) if state is WorkspaceState.PAUSED else ""
            return Workspace(name=name, state=state, template=record.template, created=record.created,
                             ssh_port=record.ssh_port, resources=record.resources, domain=record.domain,
                             image_id=record.image_id, problem=problem, backend=_backend_kind(record.backend),
                             host=_host(record), standby=_standby_state(record), paused_by=budget)
        meta = domain.metadata if domain else None
        return Workspace(name=name, state=state, template=meta.template if meta else "?",
                         created=meta.created if meta else "", ssh_port=0, resources=Resources(),
                         domain=domain.name if domain else ctx.domain_name(name=name), image_id="",
                         problem=problem)

    def _ready_record(self, *, name: str) -> WorkspaceRecord:
        return load_ready_record(ctx=self._ctx, name=name)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, *, name: str, on_progress: ProgressCallback, cancel: CancelToken) -> Workspace:
        """Boot the workspace, or repair a running one whose supervisor is gone (a host
        restart, a killed process): either way it ends with the supervisor, its egress
        helpers and the shares in place, and an overdue session is then ended by it."""
        ctx = self._ctx
        with workspace_lock(paths=ctx.paths, name=name):
            record = self._ready_record(name=name)
            files = ctx.records.files(name=name)
            info = ctx.backend.get(name=record.domain)
            running = info is not None and info.state is DomainState.RUNNING
            if info is not None and info.state is DomainState.PAUSED and (budget := paused_by(ctx=ctx, name=name)):
                raise InvalidInput(f"workspace {name!r} is paused by its {budget} budget (the session goes on)",
                                   hint=resume_hint(name=name, budget=budget))
            if running and ctx.egress.health(files=files).supervised:
                raise InvalidInput(f"workspace {name!r} is already running", hint=f"agentbox ssh {name}")
            if not running:
                self._attachments.before_boot(record=record)
                on_progress(Progress(step="boot", detail=f"starting {name}", index=1, total=3))
                ctx.backend.start(name=record.domain)
                ctx.audit(name=name).append(event="started")
                on_progress(Progress(step="ssh", detail="waiting for SSH (pinned host key)", index=2, total=3))
                target = ssh_target(record=record, files=files)
                wait_for_guest(ctx=ctx, record=record, target=target, on_progress=on_progress, cancel=cancel)
            else:
                ctx.audit(name=name).append(event="repaired", details={"what": "supervisor"})
            on_progress(Progress(step="network", detail="supervisor, egress proxy and forward", index=3, total=3))
            if running:
                self._attachments.repair(record=record)
            else:
                self._attachments.after_boot(record=record)
                self._standby.prepare(record=record, on_progress=on_progress)
        return self.get(name=name)

    def stop(self, *, name: str, force: bool, on_progress: ProgressCallback, cancel: CancelToken,
             timeout_s: float = STOP_TIMEOUT_S) -> Workspace:
        ctx = self._ctx
        with workspace_lock(paths=ctx.paths, name=name):
            record = self._ready_record(name=name)
            info = ctx.backend.get(name=record.domain)
            if info is None or info.state is DomainState.STOPPED:
                raise InvalidInput(f"workspace {name!r} is not running")
            self._attachments.before_power_off(name=name)
            how = "forced"
            if not force:
                on_progress(Progress(step="shutdown", detail=f"asking {name} to shut down", index=1, total=2))
                ctx.backend.shutdown(name=record.domain)
                if self._wait_stopped(domain=record.domain, timeout_s=timeout_s, cancel=cancel):
                    how = "graceful"
                else:
                    on_progress(Progress(step="shutdown", detail=f"no shutdown after {timeout_s:.0f} s: forcing",
                                         index=2, total=2))
            if how == "forced":
                ctx.backend.destroy(name=record.domain)
            self._attachments.after_power_off(record=record)
            self._standby.discard(record=record)  # its RAM is the user's again; a start makes a new copy
            ctx.audit(name=name).append(event="stopped", details={"how": how})
            anchor_trail(ctx=ctx, name=name, why="stopped")
        return self.get(name=name)

    def _wait_stopped(self, *, domain: str, timeout_s: float, cancel: CancelToken) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            info = self._ctx.backend.get(name=domain)
            if info is None or info.state is DomainState.STOPPED:
                return True
            cancel.wait(0.5)
        return False

    def destroy(self, *, name: str, on_progress: ProgressCallback, purge: bool = False) -> None:
        """Remove everything of a workspace, broken or not: domain, snapshots, disks, keys, files.

        The audit log and the session receipts are kept (the log ending with a `destroyed`
        record; a later create of the same name continues it) unless `purge` is true.
        """
        ctx = self._ctx
        validate_workspace_name(name)
        with workspace_lock(paths=ctx.paths, name=name):
            record = None
            try:
                record = ctx.records.load(name=name)
            except AgentboxError:
                pass  # a damaged record must not keep destroy from cleaning up
            domain = record.domain if record else ctx.domain_name(name=name)
            # With standby there is a second domain, paused or left by a crash mid-swap.
            found = [d for d in (domain, other_slot(domain)) if ctx.backend.get(name=d) is not None]
            if not found and name not in ctx.records.names():
                raise NotFound(f"no workspace named {name!r}", hint="agentbox list shows your workspaces")
            self._attachments.before_power_off(name=name)
            for each in found:
                on_progress(Progress(step="domain", detail=f"removing VM {each}", index=1, total=3))
                ctx.backend.destroy(name=each)
                ctx.backend.undefine(name=each)
            on_progress(Progress(step="disks", detail="removing disks and seed", index=2, total=3))
            storage = Path(record.storage_dir) if record else ctx.workspace_storage(name=name)
            if record is not None:
                self._attachments.after_power_off(record=record, remove_outbox=True)
            else:  # no record to go by: the outbox's mount and image, found by the storage dir's name
                OutboxLimit(ctx=ctx).remove(storage=WorkspaceStorage(directory=storage))
            # A remote host's disk and seed are volumes there even when no domain was defined.
            for volume in (WorkspaceStorage(directory=storage).disk, WorkspaceStorage(directory=storage).seed):
                ctx.backend.delete_volume(path=volume)
            remove_storage(storage=storage, delete_volume=lambda path: ctx.backend.delete_volume(path=path))
            on_progress(Progress(step="files", detail="removing keys and records", index=3, total=3))
            ctx.records.remove(name=name)
            if purge:
                remove_log(ctx.paths.audit_log(name))  # with its rotated segments
                remove_anchors(ctx.paths.audit_log(name))
                ReceiptStore(paths=ctx.paths).purge(name=name)
                RecordingStore(paths=ctx.paths).purge(name=name)
                EvidenceStore(paths=ctx.paths, storage_dir=ctx.settings.storage_dir).purge(name=name)
            else:
                ctx.audit(name=name).append(event="destroyed", details={"domain": domain})
                anchor_trail(ctx=ctx, name=name, why="destroyed")
            (ctx.paths.locks_dir / f"{name}.lock").unlink(missing_ok=True)

    # -- getting in ---------------------------------------------------------------------

    def exec(self, *, name: str, argv: Sequence[str], stdout: Callable[[bytes], None],
             stderr: Callable[[bytes], None], cancel: CancelToken | None = None) -> ExecResult:
        if not argv:
            raise InvalidInput("no command given", hint=f"agentbox exec {name} -- COMMAND [ARGS...]")
        record = self._running_record(name=name)
        target = ssh_target(record=record, files=self._ctx.records.files(name=name))
        counted = {"out": 0, "err": 0}

        def out(chunk: bytes) -> None:
            counted["out"] += len(chunk)
            stdout(chunk)

        def err(chunk: bytes) -> None:
            counted["err"] += len(chunk)
            stderr(chunk)

        with ExitStack() as stack:
            cast = (stack.enter_context(recording(ctx=self._ctx, name=name, kind=RecordingKind.EXEC, argv=argv))
                    if self._ctx.settings.record_sessions else None)
            started = time.monotonic()
            code = self._ctx.guest.run_command(target=target, argv=list(argv), stdout=_tee(out, cast),
                                               stderr=_tee(err, cast), cancel=cancel)
            duration = time.monotonic() - started
            if cast is not None:
                cast.exit_code = code
        recorded = redact_argv(argv)  # the log and the receipts are kept for good: no keys in them
        self._ctx.audit(name=name).append(event="exec", details={
            "argv": list(recorded.argv), "exit_code": code, "duration_s": round(duration, 3),
            "stdout_bytes": counted["out"], "stderr_bytes": counted["err"],
            **({"redacted": recorded.count} if recorded.count else {}),
            **({"recording": cast.id} if cast is not None else {})})
        return ExecResult(exit_code=code, duration_s=duration)

    def ssh_command(self, *, name: str, command: Sequence[str]) -> builtins.list[str]:  # bare `list`: the method
        """argv for the system ssh client, with the workspace's generated config."""
        record = self._running_record(name=name)
        return ssh_argv(record=record, files=self._ctx.records.files(name=name), command=command)

    def _running_record(self, *, name: str) -> WorkspaceRecord:
        record = self._ready_record(name=name)
        info = self._ctx.backend.get(name=record.domain)
        if info is None or info.state is not DomainState.RUNNING:
            raise GuestError(f"workspace {name!r} is not running", hint=f"agentbox start {name}")
        return record

    def write_ssh_config(self, *, ssh_dir: Path) -> ManagedSshConfig:
        entries = []
        for name in self._ctx.records.names():
            try:
                record = self._ctx.records.load(name=name)
            except AgentboxError:
                continue
            if record is not None and record.phase is Phase.READY:
                entries.append((record, self._ctx.records.files(name=name)))
        return write_managed_ssh_config(ssh_dir=ssh_dir, entries=entries)


def _state(*, name: str, record: WorkspaceRecord | None, domain: DomainInfo | None, busy: bool,
           problem: str) -> tuple[WorkspaceState, str]:
    # A broken workspace's problem ends with what to do about it: `list` shows nothing else.
    remedy = f"; agentbox destroy {name} removes what is left"
    if record is not None and record.phase is not Phase.READY:
        if busy:
            return WorkspaceState.CREATING, ""
        return WorkspaceState.BROKEN, f"{record.phase.value} was interrupted{remedy}"
    if record is None:
        return WorkspaceState.BROKEN, (problem or "its record is missing (the VM exists without agentbox's files)"
                                       ) + remedy
    if domain is None:
        return WorkspaceState.BROKEN, f"its VM is missing from libvirt{remedy}"
    return _DOMAIN_STATES[domain.state], ""


def _tee(sink: Callable[[bytes], None], cast: ActiveRecording | None) -> Callable[[bytes], None]:
    if cast is None:
        return sink

    def both(chunk: bytes) -> None:
        sink(chunk)
        cast.output(chunk)
    return both


def _backend_kind(raw: str) -> BackendKind:
    try:
        return BackendKind(raw)
    except ValueError:
        return BackendKind.LIBVIRT  # a record from before the choice, or hand-edited


def _standby_state(record: WorkspaceRecord) -> StandbyState:
    if not record.standby:
        return StandbyState.OFF
    return StandbyState.READY if record.standby_snapshot else StandbyState.WAITING


def _host(record: WorkspaceRecord) -> str:
    jump = record.jump
    if jump is None:
        return ""
    return jump.host if jump.port == 22 else f"{jump.host}:{jump.port}"
