"""Saved states of a workspace: the clean snapshot, reset, named checkpoints, restore.

A reset never asks the guest for anything: power off → revert to the clean snapshot (disk
and RAM) → the guest resumes where provisioning ended → agentbox sets its clock and
reseeds its RNG over SSH → the restore hooks run (shares, egress forward). A guest that
hangs, crashed or ignores ACPI resets all the same. Where RAM snapshots are impossible the
reset recreates the overlay disk and cold boots instead, and says so.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from agentbox.backends.base import DomainState, SnapshotInfo
from agentbox.errors import AgentboxError, BackendError, GuestError, HostKeyMismatch, InvalidInput, NotFound
from agentbox.images.store import ImageInfo
from agentbox.model.progress import CancelToken, Progress, ProgressCallback
from agentbox.provision.refresh import refresh_argv, refresh_input
from agentbox.services.anchoring import anchor_trail
from agentbox.services.checkpoints import (
    CHECKPOINT_PREFIX,
    RESERVED_LABEL,
    Checkpoint,
    Checkpoints,
    checkpoint_label,
    flush_guest,
    has_checkpoints,
    require_checkpoint,
)
from agentbox.services.standby import Standby
from agentbox.services.context import ServiceContext
from agentbox.services.guest_ready import wait_cloud_init, wait_for_guest
from agentbox.host.locks import workspace_lock
from agentbox.services.lookup import load_ready_record
from agentbox.stores.records import WorkspaceRecord
from agentbox.services.attachments import Attachments
from agentbox.services.ssh_access import ssh_target

CLEAN_PREFIX = "clean-"
# A reverted guest's sshd answers at once (it was running when the snapshot was taken): wait
# this long before taking it as hung, not the cold boot's timeout; then revert once more.
REVERTED_ANSWER_S = 240.0
REVERT_ATTEMPTS = 2

log = logging.getLogger(__name__)

RestoreHook = Callable[[WorkspaceRecord], None]
# Ends the workspace's session `session_id` with a receipt and a reset; None if that session
# already ended. Wired to SessionService.end in bootstrap (sessions are built on snapshots).
SessionResetter = Callable[[str, str, ProgressCallback, CancelToken], "RestoreOutcome | None"]


class RestorePath(StrEnum):
    SNAPSHOT = "snapshot"  # destroy → revert (disk + RAM) → refresh
    COLD_BOOT = "cold-boot"  # new overlay → boot → cloud-init (no RAM snapshots here)
    STANDBY = "standby"  # the paused clean copy takes over → refresh (services/standby.py)


@dataclass(frozen=True)
class RestoreOutcome:
    name: str
    target: str  # "clean" or the checkpoint's label
    path: RestorePath
    reason: str  # why this path (the fallback's cause, or "")
    duration_s: float
    running: bool
    clock_skew_s: float | None = None  # guest minus host after the refresh


class SnapshotService:
    def __init__(self, *, ctx: ServiceContext, restore_hooks: Sequence[RestoreHook] = (),
                 end_session: SessionResetter | None = None) -> None:
        self._ctx = ctx
        self._hooks = tuple(restore_hooks)
        self._attachments = Attachments(ctx=ctx)
        self._end_session = end_session
        self._checkpoints = Checkpoints(ctx=ctx)
        self._standby = Standby(ctx=ctx)

    # -- the clean snapshot ----------------------------------------------------------------

    def take_clean(self, *, record: WorkspaceRecord, on_progress: ProgressCallback,
                   flushed: bool = False) -> WorkspaceRecord:
        """At the end of create (cloud-init done, no shares): the state every reset returns to.
        The caller holds the workspace lock; `flushed`: it flushed the guest and left the
        clean marker itself, in a round trip of its own (a warm clone's identity)."""
        ctx = self._ctx
        if not ctx.backend.capabilities_of(name=record.domain).ram_snapshots:
            reason = "this backend cannot save a running guest's RAM: resets recreate the disk and cold boot"
            on_progress(Progress(step="snapshot", detail=reason))
            return replace(record, clean_snapshot="", clean_fallback=reason)
        snapshot = _next_clean_name(existing=ctx.backend.list_snapshots(name=record.domain))
        on_progress(Progress(step="snapshot", detail=f"saving the clean state (disk and RAM) as {snapshot}"))
        if not flushed:
            flush_guest(ctx=ctx, record=record, mark_clean=True)
        try:
            ctx.backend.create_snapshot(name=record.domain, snapshot=snapshot,
                                        description=f"agentbox clean state of {record.name}")
        except BackendError as exc:  # e.g. UEFI firmware: libvirt refuses internal RAM snapshots
            reason = f"a RAM snapshot is impossible here ({exc.message}): resets recreate the disk and cold boot"
            on_progress(Progress(step="snapshot", detail=reason))
            return replace(record, clean_snapshot="", clean_fallback=reason)
        return replace(record, clean_snapshot=snapshot, clean_fallback="")

    def reclean(self, *, name: str, on_progress: ProgressCallback) -> WorkspaceRecord:
        """Make the current (running) state the new clean one; the old one goes only after
        the new one exists, so there is always a clean state to return to."""
        ctx = self._ctx
        with workspace_lock(paths=ctx.paths, name=name):
            record = load_ready_record(ctx=ctx, name=name)
            info = ctx.backend.get(name=record.domain)
            if info is None or info.state is not DomainState.RUNNING:
                raise InvalidInput(f"workspace {name!r} must be running to save its state as the clean one",
                                   hint=f"agentbox start {name}")
            with self._attachments.around_snapshot(record=record, running=True):
                updated = self.take_clean(record=record, on_progress=on_progress)
            if updated.clean_snapshot and record.clean_snapshot:
                ctx.backend.delete_snapshot(name=record.domain, snapshot=record.clean_snapshot)
            # A standby copy holds the old clean state: it goes, and the next reset exports the new one.
            updated = replace(self._standby.discard(record=updated), standby_export=0)
            ctx.records.save(record=updated)
            ctx.audit(name=name).append(event="reclean", details={
                "snapshot": updated.clean_snapshot, "replaced": record.clean_snapshot,
                "fallback": updated.clean_fallback})
            return updated

    # -- reset and restore -------------------------------------------------------------------

    def reset(self, *, name: str, on_progress: ProgressCallback, cancel: CancelToken) -> RestoreOutcome:
        """Back to clean. During a session, the session ends first with its receipt (a reset
        wipes what the receipt describes), however the reset was asked for."""
        session = self._ctx.records.files(name=name).session
        if self._end_session is not None and session.exists():
            session_id = _session_id(session)
            if session_id and (outcome := self._end_session(name, session_id, on_progress, cancel)) is not None:
                return outcome
        with workspace_lock(paths=self._ctx.paths, name=name):
            return self.reset_locked(record=load_ready_record(ctx=self._ctx, name=name),
                                     on_progress=on_progress, cancel=cancel)

    def reset_locked(self, *, record: WorkspaceRecord, on_progress: ProgressCallback,
                     cancel: CancelToken) -> RestoreOutcome:
        """reset() for callers that already hold the workspace lock (session end)."""
        started = time.monotonic()
        standby = self._standby.wanted(record=record)
        why = self._cannot_swap(record) if standby and record.clean_snapshot else ""
        if standby and record.clean_snapshot and not why:
            outcome = self._swap(record=record, started=started, on_progress=on_progress, cancel=cancel)
        elif record.clean_snapshot:
            outcome = self._revert(record=record, snapshot=record.clean_snapshot, target=RESERVED_LABEL,
                                   started=started, on_progress=on_progress, cancel=cancel,
                                   export=standby and not record.standby_export)
            outcome = replace(outcome, reason=f"standby: {why}") if standby else outcome
        else:
            outcome = self._cold_boot(record=record, started=started, on_progress=on_progress, cancel=cancel)
        record = self._ctx.records.load(name=record.name) or record  # a swap or an export changed it
        if standby and outcome.running:
            record = self._standby.prepare(record=record, on_progress=on_progress)
        self._ctx.records.save(record=replace(record, last_reset=self._ctx.clock().isoformat(timespec="seconds")))
        self._ctx.audit(name=record.name).append(event="reset", details=_details(outcome))
        anchor_trail(ctx=self._ctx, name=record.name, why="reset")
        return outcome

    def restore(self, *, name: str, label: str, on_progress: ProgressCallback,
                cancel: CancelToken) -> RestoreOutcome:
        ctx = self._ctx
        label = checkpoint_label(label)
        with workspace_lock(paths=ctx.paths, name=name):
            record = load_ready_record(ctx=ctx, name=name)
            require_checkpoint(ctx=ctx, record=record, label=label)
            outcome = self._revert(record=record, snapshot=CHECKPOINT_PREFIX + label, target=label,
                                   started=time.monotonic(), on_progress=on_progress, cancel=cancel)
            ctx.audit(name=name).append(event="restore", details=_details(outcome))
            return outcome

    def _cannot_swap(self, record: WorkspaceRecord) -> str:
        """Why this reset reverts in place though standby is on ("": it swaps)."""
        if has_checkpoints(ctx=self._ctx, record=record):
            return "its checkpoints live on the running disk, so it was reverted in place"
        if not self._standby.ready(record=record):
            return "no copy was ready yet (one is prepared now)"
        return ""

    def _swap(self, *, record: WorkspaceRecord, started: float, on_progress: ProgressCallback,
              cancel: CancelToken) -> RestoreOutcome:
        """The paused clean copy takes over; the old domain goes once the workspace is back.
        Whatever fails, the reset still happens: in place, on whichever domain now runs."""
        on_progress(Progress(step="swap", detail="to the clean copy standing by", index=1, total=4))
        self._attachments.before_swap(record=record)
        try:
            swapped = self._standby.swap(record=record)
        except AgentboxError as exc:
            outcome = self._revert(record=record, snapshot=record.clean_snapshot, target=RESERVED_LABEL,
                                   started=started, on_progress=on_progress, cancel=cancel)
            return replace(outcome, reason=f"standby: the swap failed ({exc.message}), so it was reverted in place")
        self._attachments.after_swap(record=swapped)
        on_progress(Progress(step="refresh", detail="setting the guest clock and reseeding its RNG", index=3, total=4))
        mounts = self._attachments.after_revert(record=swapped)
        try:
            skew = self._refresh(record=swapped, cancel=cancel, then=mounts)
        except HostKeyMismatch:
            raise
        except GuestError as exc:
            log.warning("%s: the standby copy did not answer (%s); reverting it in place", record.name, exc.message)
            self._standby.retire(record=swapped)
            outcome = self._revert(record=swapped, snapshot=swapped.clean_snapshot, target=RESERVED_LABEL,
                                   started=started, on_progress=on_progress, cancel=cancel)
            return replace(outcome, reason=f"standby: the copy did not answer ({exc.message}), so it was reverted")
        self._run_hooks(record=swapped, on_progress=on_progress, shares_attached=True)
        outcome = RestoreOutcome(name=record.name, target=RESERVED_LABEL, path=RestorePath.STANDBY, reason="",
                                 duration_s=time.monotonic() - started, running=True, clock_skew_s=skew)
        self._standby.retire(record=swapped)  # after the workspace is back: tearing down its RAM takes seconds
        return outcome

    def _revert(self, *, record: WorkspaceRecord, snapshot: str, target: str, started: float,
                on_progress: ProgressCallback, cancel: CancelToken, export: bool = False) -> RestoreOutcome:
        ctx = self._ctx
        on_progress(Progress(step="power off", detail=f"stopping {record.name} at once", index=1, total=4))
        if ctx.backend.get(name=record.domain) is None:
            raise NotFound(f"the VM of workspace {record.name!r} is missing",
                           hint=f"agentbox destroy {record.name} removes what is left of it")
        for attempt in range(REVERT_ATTEMPTS):
            self._attachments.before_power_cycle(record=record)
            ctx.backend.destroy(name=record.domain)
            again = " (again: the reverted guest did not answer SSH)" if attempt else ""
            on_progress(Progress(step="revert", detail=f"back to {target}{again}", index=2, total=4))
            ctx.backend.revert_snapshot(name=record.domain, snapshot=snapshot)
            info = ctx.backend.get(name=record.domain)
            running = info is not None and info.state is DomainState.RUNNING
            skew = None
            if not running:
                self._attachments.after_power_off(record=record)
                break
            if export:  # standby's copy of the clean state, before anything is plugged in
                record = self._standby.export(record=record, on_progress=on_progress)
                export = False
            on_progress(Progress(step="refresh", detail="setting the guest clock and reseeding its RNG",
                                 index=3, total=4))
            mounts = self._attachments.after_revert(record=record)
            try:
                skew = self._refresh(record=record, cancel=cancel, then=mounts)
            except HostKeyMismatch:
                raise
            except GuestError as exc:
                # A reverted guest answers within seconds; one that does not has hung on resume
                # (seen once under TCG on a loaded host). Its snapshot is intact: revert again
                # rather than wait out the boot timeout; a second silence is the user's error.
                if cancel.cancelled or attempt + 1 == REVERT_ATTEMPTS:
                    raise
                log.warning("%s: the reverted guest did not answer (%s); reverting again", record.name, exc.message)
                continue
            self._run_hooks(record=record, on_progress=on_progress, shares_attached=True)
            break
        return RestoreOutcome(name=record.name, target=target, path=RestorePath.SNAPSHOT, reason="",
                              duration_s=time.monotonic() - started, running=running, clock_skew_s=skew)

    def _cold_boot(self, *, record: WorkspaceRecord, started: float, on_progress: ProgressCallback,
                   cancel: CancelToken) -> RestoreOutcome:
        """The fallback: a fresh overlay on the (never written) base image, then a first boot."""
        ctx = self._ctx
        reason = record.clean_fallback or "the workspace has no clean snapshot"
        if record.inspection:  # its disk is a copy of evidence: the base image is not its clean state
            raise InvalidInput(f"{record.name!r} holds restored evidence ({record.inspection}) and {reason}: "
                               "a reset would replace that disk with the base image",
                               hint=f"agentbox destroy {record.name}, then restore the evidence again")
        on_progress(Progress(step="power off", detail=f"no RAM snapshot ({reason})", index=1, total=4))
        self._attachments.before_power_cycle(record=record)
        ctx.backend.destroy(name=record.domain)
        image = self._image(record=record)
        disk = record.storage.disk
        on_progress(Progress(step="disk", detail="recreating the disk from the base image", index=2, total=4))
        ctx.backend.delete_volume(path=disk)
        ctx.backend.create_overlay(path=disk, backing=image.disk, backing_format=image.disk_format,
                                   size_gib=record.resources.disk_gib)
        on_progress(Progress(step="boot", detail="cold boot and provisioning", index=3, total=4))
        ctx.backend.start(name=record.domain)
        target = ssh_target(record=record, files=ctx.records.files(name=record.name))
        wait_for_guest(ctx=ctx, record=record, target=target, on_progress=on_progress, cancel=cancel)
        wait_cloud_init(ctx=ctx, record=record, target=target, cancel=cancel)
        self._run_hooks(record=record, on_progress=on_progress)
        return RestoreOutcome(name=record.name, target=RESERVED_LABEL, path=RestorePath.COLD_BOOT, reason=reason,
                              duration_s=time.monotonic() - started, running=True)

    def _image(self, *, record: WorkspaceRecord) -> ImageInfo:
        for image in self._ctx.images.list_images():
            if image.image_id == record.image_id:
                return image
        raise NotFound(f"the base image {record.image_id} of workspace {record.name!r} is gone",
                       hint=f"agentbox image pull {record.template}, or destroy and re-create the workspace")

    def _refresh(self, *, record: WorkspaceRecord, cancel: CancelToken, then: str = "") -> float:
        """Clock and RNG; returns the guest's clock minus the host's, measured on return."""
        ctx = self._ctx
        target = ssh_target(record=record, files=ctx.records.files(name=record.name))
        out, err = bytearray(), bytearray()

        def run() -> int:
            out.clear()
            err.clear()
            return ctx.guest.run_command(target=target, argv=list(refresh_argv(then=then)), stdin=refresh_input,
                                         stdout=out.extend, stderr=err.extend, timeout_s=60, cancel=cancel)

        try:
            # A reverted guest's sshd is already listening: no separate readiness probe
            # (each SSH handshake costs the TCG guest most of a second).
            code = run()
        except HostKeyMismatch:
            raise
        except GuestError:
            wait_for_guest(ctx=ctx, record=record, target=target, on_progress=lambda _: None, cancel=cancel,
                           timeout_s=REVERTED_ANSWER_S)
            code = run()
        received = time.time()
        if code != 0:
            raise AgentboxError(f"{record.name} was reset, but setting its clock, reseeding its RNG or mounting its"
                                f" shares failed (exit {code}): {err.decode(errors='replace').strip()[-300:]}",
                                hint=f"reset again (agentbox reset {record.name}); if it persists, see agentbox doctor")
        if then:
            self._attachments.after_refresh(record=record, guest_stderr=bytes(err))
        try:
            return float(out.decode().split()[-1]) - received
        except (ValueError, IndexError):
            return float("nan")

    def _run_hooks(self, *, record: WorkspaceRecord, on_progress: ProgressCallback,
                   shares_attached: bool = False) -> None:
        self._attachments.after_boot(record=record, shares_attached=shares_attached)
        for hook in self._hooks:
            hook(record)
        on_progress(Progress(step="ready", detail=f"{record.name} is back", index=4, total=4))

    # -- named checkpoints (services/checkpoints.py) ------------------------------------------

    def checkpoint(self, *, name: str, label: str) -> Checkpoint:
        return self._checkpoints.checkpoint(name=name, label=label)

    def checkpoints(self, *, name: str) -> tuple[Checkpoint, ...]:
        return self._checkpoints.checkpoints(name=name)

    def delete_checkpoint(self, *, name: str, label: str) -> None:
        self._checkpoints.delete_checkpoint(name=name, label=label)


def _session_id(path: Path) -> str:
    try:
        return str(json.loads(path.read_text(encoding="utf-8")).get("id", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def _next_clean_name(*, existing: Sequence[SnapshotInfo]) -> str:
    numbers = [int(s.name[len(CLEAN_PREFIX):]) for s in existing
               if s.name.startswith(CLEAN_PREFIX) and s.name[len(CLEAN_PREFIX):].isdigit()]
    return f"{CLEAN_PREFIX}{max(numbers, default=0) + 1}"


def _details(outcome: RestoreOutcome) -> dict[str, object]:
    return {"target": outcome.target, "path": outcome.path.value, "reason": outcome.reason,
            "duration_s": round(outcome.duration_s, 3), "running": outcome.running,
            "clock_skew_s": None if outcome.clock_skew_s is None else round(outcome.clock_skew_s, 3)}
