"""Long operations the TUI runs in a worker thread, as data: what to call and how to say it.

Each factory closes over the services and returns an `Operation`; the progress screen runs
it off the UI thread and turns the outcome into an `OperationResult`. No Textual here, so
new actions (network, shares, outbox) add a factory without touching the screens.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agentbox.bootstrap import Services
from agentbox.errors import AgentboxError, Cancelled
from agentbox.model.network import NetworkMode
from agentbox.model.shares import SecretChoice
from agentbox.model.progress import CancelToken, Progress, ProgressCallback
from agentbox.services.agents import AgentTerminal
from agentbox.services.create import CreateRequest
from agentbox.services.network import PolicyUpdate
from agentbox.services.shares import GUEST_SHARES
from agentbox.services.snapshots import RestoreOutcome, RestorePath

SESSION_END_REASON = "ended in the TUI"

Run = Callable[[ProgressCallback, CancelToken], str]  # returns the one-line summary


@dataclass(frozen=True)
class Operation:
    title: str  # "Resetting demo"
    workspace: str
    run: Run
    cancellable: bool = True  # whether the service stops on a CancelToken


@dataclass(frozen=True)
class ErrorInfo:
    title: str
    message: str
    hint: str = ""


@dataclass(frozen=True)
class OperationResult:
    workspace: str
    summary: str = ""
    error: ErrorInfo | None = None
    cancelled: bool = False


def error_info(*, title: str, exc: BaseException) -> ErrorInfo:
    """A service error as the user should read it; anything else without a traceback."""
    if isinstance(exc, AgentboxError):
        return ErrorInfo(title=title, message=exc.message, hint=exc.hint or "")
    return ErrorInfo(title=title, message=f"unexpected {type(exc).__name__}: {exc}",
                     hint="this is a bug in agentbox; the same command on the command line shows more")


def perform(*, operation: Operation, on_progress: ProgressCallback, cancel: CancelToken) -> OperationResult:
    """Run it and never raise: the worker only has to post the result."""
    try:
        summary = operation.run(on_progress, cancel)
    except Cancelled:
        return OperationResult(workspace=operation.workspace, cancelled=True,
                               summary=f"{operation.title}: cancelled")
    except AgentboxError as exc:  # anything else is a bug: the app's boundary logs it
        return OperationResult(workspace=operation.workspace,
                               error=error_info(title=f"{operation.title} failed", exc=exc))
    return OperationResult(workspace=operation.workspace, summary=summary)


# -- the operations -------------------------------------------------------------------------


def create(*, services: Services, request: CreateRequest, allow: Sequence[str] = ()) -> Operation:
    """Create, then put `allow` (entries the wizard already checked) on the new allowlist."""
    def run(on_progress: ProgressCallback, cancel: CancelToken) -> str:
        started = time.monotonic()
        services.create.create(request=request, on_progress=on_progress, cancel=cancel)
        for entry in allow:
            on_progress(Progress(step="allowlist", detail=f"allowing {entry}"))
            services.network.allow(name=request.name, entry=entry)
        extra = f", {len(allow)} allowlist entr{'y' if len(allow) == 1 else 'ies'}" if allow else ""
        agents = services.agents.agents(name=request.name)
        then = f"press t (or Enter) for {agents[0].name}" if agents else "press o for a shell"
        return f"{request.name} is ready ({_seconds(time.monotonic() - started)}{extra}): {then}"
    return Operation(title=f"Creating {request.name}", workspace=request.name, run=run)


def start(*, services: Services, name: str) -> Operation:
    def run(on_progress: ProgressCallback, cancel: CancelToken) -> str:
        started = time.monotonic()
        services.workspaces.start(name=name, on_progress=on_progress, cancel=cancel)
        return f"{name} started in {_seconds(time.monotonic() - started)}"
    return Operation(title=f"Starting {name}", workspace=name, run=run)


def repair(*, services: Services, name: str) -> Operation:
    def run(on_progress: ProgressCallback, cancel: CancelToken) -> str:
        services.workspaces.start(name=name, on_progress=on_progress, cancel=cancel)  # repairs a running one
        return f"{name} repaired: its supervisor and egress are back"
    return Operation(title=f"Repairing {name}", workspace=name, run=run)


def resume(*, services: Services, name: str) -> Operation:
    """A guest its budget paused (services/budgets.py refuses while a budget is still exceeded)."""
    def run(on_progress: ProgressCallback, cancel: CancelToken) -> str:
        resumed = services.budgets.resume(name=name)
        return f"{name} resumed (its {resumed.paused_by} budget had paused it); the session goes on"
    return Operation(title=f"Resuming {name}", workspace=name, run=run, cancellable=False)


def stop(*, services: Services, name: str) -> Operation:
    def run(on_progress: ProgressCallback, cancel: CancelToken) -> str:
        started = time.monotonic()
        services.workspaces.stop(name=name, force=False, on_progress=on_progress, cancel=cancel)
        return f"{name} stopped in {_seconds(time.monotonic() - started)}"
    return Operation(title=f"Stopping {name}", workspace=name, run=run)


def reset(*, services: Services, name: str) -> Operation:
    def run(on_progress: ProgressCallback, cancel: CancelToken) -> str:
        return describe_restore(services.snapshots.reset(name=name, on_progress=on_progress, cancel=cancel))
    return Operation(title=f"Resetting {name}", workspace=name, run=run)


def panic(*, services: Services, name: str) -> Operation:
    def run(on_progress: ProgressCallback, cancel: CancelToken) -> str:
        outcome = services.panic.panic(name=name, on_progress=on_progress, cancel=cancel)
        kept = ("no evidence (it was not running)" if outcome.evidence is None else
                f"evidence {outcome.evidence.id} kept" if outcome.evidence.files else
                f"no evidence: {outcome.evidence.problem}")
        return (f"network cut after {_seconds(outcome.cut_s)} and left off; {kept}; "
                f"reset to clean after {_seconds(outcome.clean_s)}")
    return Operation(title=f"PANIC: {name}", workspace=name, run=run)


def end_session(*, services: Services, name: str) -> Operation:
    def run(on_progress: ProgressCallback, cancel: CancelToken) -> str:
        end = services.sessions.end(name=name, reason=SESSION_END_REASON, on_progress=on_progress, cancel=cancel)
        if end is None:
            return f"the session of {name} had already ended"
        after = describe_restore(end.reset) if end.reset else f"{name} kept its state (the template says so)"
        return f"session ended after {_seconds(end.duration_s)}; {after}"
    return Operation(title=f"Ending the session of {name}", workspace=name, run=run)


def close_agent(*, services: Services, terminal: AgentTerminal, exit_code: int) -> Operation:
    """After an agent terminal: end the session it opened, as the template's policy says."""
    name = terminal.workspace

    def run(on_progress: ProgressCallback, cancel: CancelToken) -> str:
        end = services.agents.close(terminal=terminal, exit_code=exit_code, on_progress=on_progress, cancel=cancel)
        closed = f"{terminal.agent.name} in {name} closed (exit code {exit_code})"
        if end is None:
            return f"{closed}; the session goes on" if not terminal.own_session else f"{closed}; its session had ended"
        after = describe_restore(end.reset) if end.reset else f"{name} kept its state (the template says so)"
        return f"{closed}; session ended after {_seconds(end.duration_s)}; {after}"
    return Operation(title=f"Ending the agent session of {name}", workspace=name, run=run, cancellable=False)


def destroy(*, services: Services, name: str) -> Operation:
    def run(on_progress: ProgressCallback, cancel: CancelToken) -> str:
        services.workspaces.destroy(name=name, on_progress=on_progress)
        return f"{name} destroyed (its audit log is kept)"
    return Operation(title=f"Destroying {name}", workspace=name, run=run, cancellable=False)


def checkpoint(*, services: Services, name: str, label: str) -> Operation:
    def run(on_progress: ProgressCallback, cancel: CancelToken) -> str:
        saved = services.snapshots.checkpoint(name=name, label=label)
        return f"checkpoint {saved.label} of {name} saved" + (" (disk and RAM)" if saved.with_memory else " (disk)")
    return Operation(title=f"Saving checkpoint {label}", workspace=name, run=run, cancellable=False)


def restore(*, services: Services, name: str, label: str) -> Operation:
    def run(on_progress: ProgressCallback, cancel: CancelToken) -> str:
        return describe_restore(services.snapshots.restore(name=name, label=label, on_progress=on_progress,
                                                           cancel=cancel))
    return Operation(title=f"Restoring {name} to {label}", workspace=name, run=run)


def delete_checkpoint(*, services: Services, name: str, label: str) -> Operation:
    def run(on_progress: ProgressCallback, cancel: CancelToken) -> str:
        services.snapshots.delete_checkpoint(name=name, label=label)
        return f"checkpoint {label} of {name} deleted"
    return Operation(title=f"Deleting checkpoint {label}", workspace=name, run=run, cancellable=False)


def restore_evidence(*, services: Services, name: str, evidence_id: str, as_name: str) -> Operation:
    def run(on_progress: ProgressCallback, cancel: CancelToken) -> str:
        restored = services.panic.restore_evidence(name=name, evidence_id=evidence_id, as_name=as_name,
                                                   on_progress=on_progress, cancel=cancel)
        return (f"evidence {evidence_id} of {name} restored into {restored.workspace}: network off for good, "
                f"no shares (o for a shell in it; d destroys it when done); the RAM was not restored (an ELF "
                f"core for crash or gdb); evidence integrity after: {restored.integrity_after.value}")
    return Operation(title=f"Restoring evidence {evidence_id} as {as_name}", workspace=as_name, run=run)


def remove_evidence(*, services: Services, name: str, evidence_id: str) -> Operation:
    def run(on_progress: ProgressCallback, cancel: CancelToken) -> str:
        services.panic.remove_evidence(name=name, evidence_id=evidence_id)
        return f"evidence {evidence_id} of {name} removed"
    return Operation(title=f"Removing evidence {evidence_id}", workspace=name, run=run, cancellable=False)


def set_network(*, services: Services, name: str, mode: NetworkMode) -> PolicyUpdate:
    """The mode picked, and only that one (quick)."""
    return services.network.set_mode(name=name, mode=mode.value)


def describe_update(*, name: str, update: PolicyUpdate) -> str:
    where = "now, for the next connection" if update.live else "when the workspace next runs"
    cut = f"; {update.cut} open connection(s) closed" if update.cut else ""
    return f"{name}: network {update.policy.mode.value} (applies {where}{cut})"


def add_share(*, services: Services, name: str, source: str, tag: str | None, mechanism: str | None,
              secrets: SecretChoice | None = None) -> Operation:
    def run(on_progress: ProgressCallback, cancel: CancelToken) -> str:
        on_progress(Progress(step="share", detail=f"sharing {source} read-only"))
        added = services.shares.add(name=name, source=source, tag=tag, mechanism=mechanism, secrets=secrets)
        share = added.share
        kind = "live" if share.mechanism.live else "a copy made now: later changes on the host do not show"
        gaps = f". But {added.not_readable.summary()}: {added.hint}" if added.not_readable.count else ""
        left_out = f"; left out: {', '.join(share.excluded)}" if share.excluded else ""
        return (f"{share.source} is shared read-only at {GUEST_SHARES}/{share.tag} in {name} "
                f"({share.mechanism.value}: {kind}){left_out}{gaps}")
    return Operation(title=f"Sharing a folder with {name}", workspace=name, run=run, cancellable=False)


def remove_share(*, services: Services, name: str, tag: str) -> Operation:
    def run(on_progress: ProgressCallback, cancel: CancelToken) -> str:
        share = services.shares.remove(name=name, tag=tag)
        return f"{share.source} is no longer shared into {name}"
    return Operation(title=f"Removing share {tag}", workspace=name, run=run, cancellable=False)


def export_outbox(*, services: Services, name: str, dest: Path) -> Operation:
    def run(on_progress: ProgressCallback, cancel: CancelToken) -> str:
        on_progress(Progress(step="export", detail=f"copying regular files into {dest}"))
        result = services.outbox.export(name=name, dest=dest)
        skipped = f"; {len(result.skipped)} skipped (only new regular files are exported)" if result.skipped else ""
        return f"exported {len(result.copied)} file(s), {result.bytes} bytes, to {dest.expanduser()}{skipped}"
    return Operation(title=f"Exporting the outbox of {name}", workspace=name, run=run, cancellable=False)


def standby(*, services: Services, name: str, on: bool) -> Operation:
    def run(on_progress: ProgressCallback, cancel: CancelToken) -> str:
        services.standby.set(name=name, on=on, on_progress=on_progress, cancel=cancel)
        state = services.workspaces.get(name=name).standby
        return f"standby of {name}: {state.value}"
    return Operation(title=f"Standby {'on' if on else 'off'} for {name}", workspace=name, run=run, cancellable=False)


def clear_outbox(*, services: Services, name: str) -> Operation:
    def run(on_progress: ProgressCallback, cancel: CancelToken) -> str:
        return f"outbox of {name} emptied ({services.outbox.clear(name=name)} item(s) removed)"
    return Operation(title=f"Clearing the outbox of {name}", workspace=name, run=run, cancellable=False)


def describe_restore(outcome: RestoreOutcome) -> str:
    target = "its clean state" if outcome.target == "clean" else f"checkpoint {outcome.target}"
    how = {RestorePath.SNAPSHOT: "from the snapshot", RestorePath.STANDBY: "by a swap to its standby copy",
           RestorePath.COLD_BOOT: f"by a cold boot ({outcome.reason})"}[outcome.path]
    if outcome.reason and outcome.path is not RestorePath.COLD_BOOT:
        how += f" ({outcome.reason})"
    return f"{outcome.name} back to {target} in {_seconds(outcome.duration_s)}, {how}"


def _seconds(value: float) -> str:
    return f"{value:.1f} s"
