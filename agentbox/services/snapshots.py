"""Saved states of a workspace: the clean snapshot, reset, named checkpoints, restore.

A reset never asks the guest for anything: power off → revert to the clean snapshot (disk
and RAM) → the guest resumes where provisioning ended → agentbox sets its clock and
reseeds its RNG over SSH → the restore hooks run (shares, egress forward). A guest that
hangs, crashed or ignores ACPI resets all the same. Where RAM snapshots are impossible the
reset recreates the overlay disk and cold boots instead, and says so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from agentbox.backends.base import DomainState, SnapshotInfo
from agentbox.errors import AgentboxError, BackendError, GuestError, HostKeyMismatch, InvalidInput, NotFound
from agentbox.images.store import ImageInfo
from agentbox.model.names import validate_label
from agentbox.model.progress import CancelToken, Progress, ProgressCallback
from agentbox.provision.guest_changes import MARK_CLEAN_ARGV
from agentbox.provision.refresh import refresh_argv, refresh_input
from agentbox.services.anchoring import anchor_trail
from agentbox.services.context import ServiceContext
from agentbox.services.guest_ready import wait_cloud_init, wait_for_guest
from agentbox.host.locks import workspace_lock
from agentbox.services.lookup import load_ready_record
from agentbox.stores.records import WorkspaceRecord
from agentbox.services.attachments import Attachments
from agentbox.services.ssh_access import ssh_target

CLEAN_PREFIX = "clean-"
CHECKPOINT_PREFIX = "checkpoint-"
RESERVED_LABEL = "clean"
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


@dataclass(frozen=True)
class RestoreOutcome:
    name: str
    target: str  # "clean" or the checkpoint's label
    path: RestorePath
    reason: str  # why this path (the fallback's cause, or "")
    duration_s: float
    running: bool
    clock_skew_s: float | None = None  # guest minus host after the refresh


@dataclass(frozen=True)
class Checkpoint:
    label: str
    created: str
    with_memory: bool


class SnapshotService:
    def __init__(self, *, ctx: ServiceContext, restore_hooks: Sequence[RestoreHook] = (),
                 end_session: SessionResetter | None = None) -> None:
        self._ctx = ctx
        self._hooks = tuple(restore_hooks)
        self._attachments = Attachments(ctx=ctx)
        self._end_session = end_session

    # -- the clean snapshot ----------------------------------------------------------------

    def take_clean(self, *, record: WorkspaceRecord, on_progress: ProgressCallback) -> WorkspaceRecord:
        """At the end of create (cloud-init done, no shares): the state every reset returns to.
        The caller holds the workspace lock."""
        ctx = self._ctx
        if not ctx.backend.capabilities_of(name=record.domain).ram_snapshots:
            reason = "this backend cannot save a running guest's RAM: resets recreate the disk and cold boot"
            on_progress(Progress(step="snapshot", detail=reason))
            return replace(record, clean_snapshot="", clean_fallback=reason)
        snapshot = _next_clean_name(existing=ctx.backend.list_snapshots(name=record.domain))
        on_progress(Progress(step="snapshot", detail=f"saving the clean state (disk and RAM) as {snapshot}"))
        self._sync(record, mark_clean=True)
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
        if record.clean_snapshot:
            outcome = self._revert(record=record, snapshot=record.clean_snapshot, target=RESERVED_LABEL,
                                   started=started, on_progress=on_progress, cancel=cancel)
        else:
            outcome = self._cold_boot(record=record, started=started, on_progress=on_progress, cancel=cancel)
        self._ctx.records.save(record=replace(record, last_reset=self._ctx.clock().isoformat(timespec="seconds")))
        self._ctx.audit(name=record.name).append(event="reset", details=_details(outcome))
        anchor_trail(ctx=self._ctx, name=record.name, why="reset")
        return outcome

    def restore(self, *, name: str, label: str, on_progress: ProgressCallback,
                cancel: CancelToken) -> RestoreOutcome:
        ctx = self._ctx
        label = _checkpoint_label(label)
        with workspace_lock(paths=ctx.paths, name=name):
            record = load_ready_record(ctx=ctx, name=name)
            self._require_checkpoint(record=record, label=label)
            outcome = self._revert(record=record, snapshot=CHECKPOINT_PREFIX + label, target=label,
                                   started=time.monotonic(), on_progress=on_progress, cancel=cancel)
            ctx.audit(name=name).append(event="restore", details=_details(outcome))
            return outcome

    def _revert(self, *, record: WorkspaceRecord, snapshot: str, target: str, started: float,
                on_progress: ProgressCallback, cancel: CancelToken) -> RestoreOutcome:
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

    # -- named checkpoints -------------------------------------------------------------------

    def checkpoint(self, *, name: str, label: str) -> Checkpoint:
        ctx = self._ctx
        label = _checkpoint_label(label)
        with workspace_lock(paths=ctx.paths, name=name):
            record = load_ready_record(ctx=ctx, name=name)
            info = ctx.backend.get(name=record.domain)
            running = info is not None and info.state is DomainState.RUNNING
            if running and not ctx.backend.capabilities_of(name=record.domain).ram_snapshots:
                raise InvalidInput("this backend cannot save a running guest's RAM",
                                   hint=f"stop the workspace first (agentbox stop {name}) for a disk-only checkpoint")
            if running:
                self._sync(record)
            try:
                with self._attachments.around_snapshot(record=record, running=running):
                    snap = ctx.backend.create_snapshot(name=record.domain, snapshot=CHECKPOINT_PREFIX + label,
                                                       description=f"agentbox checkpoint {label} of {name}")
            except (GuestError, BackendError) as exc:
                raise self._for_lack_of_space(record=record, cause=exc) or exc from None
            try:
                ctx.audit(name=name).append(event="checkpoint", details={"label": label,
                                                                         "with_memory": snap.with_memory})
                anchor_trail(ctx=ctx, name=name, why=f"checkpoint {label}")
            except AgentboxError as exc:
                # Not recorded, not kept: a checkpoint the audit trail does not vouch for must not stay.
                ctx.backend.delete_snapshot(name=record.domain, snapshot=CHECKPOINT_PREFIX + label)
                with contextlib.suppress(AgentboxError):
                    ctx.audit(name=name).append(event="checkpoint.deleted", details={"label": label,
                                                                                     "why": exc.message})
                raise AgentboxError(f"checkpoint {label} of {name} was not kept: {exc.message}",
                                    hint=exc.hint) from None
            return _as_checkpoint(snap)

    def _for_lack_of_space(self, *, record: WorkspaceRecord, cause: AgentboxError) -> BackendError | None:
        """The error to show when a checkpoint failed for want of space in the storage dir,
        which QEMU does not say in so many words: it pauses a guest whose disk write fails
        (werror=enospc, and then SSH times out), and a RAM snapshot that cannot grow the qcow2
        comes back as an I/O error. None when neither is the case."""
        storage = record.storage.directory
        stats = os.statvfs(storage)
        free_mib = stats.f_bavail * stats.f_frsize // 2**20
        info = self._ctx.backend.get(name=record.domain)
        hint = f"free some space on the file system of {storage}, then agentbox reset {record.name}"
        if info is not None and info.state is DomainState.PAUSED:
            return BackendError(f"{record.name} was paused by QEMU: its disk could not be written "
                                f"(No space left on device? {free_mib} MiB free in {storage})", hint=hint)
        if free_mib < record.resources.memory_mib:
            return BackendError(f"{cause.message}: the storage dir is full (No space left on device: "
                                f"{free_mib} MiB free in {storage}, and the guest's RAM alone is "
                                f"{record.resources.memory_mib} MiB)", hint=hint)
        return None

    def checkpoints(self, *, name: str) -> tuple[Checkpoint, ...]:
        record = load_ready_record(ctx=self._ctx, name=name)
        return tuple(_as_checkpoint(s) for s in self._ctx.backend.list_snapshots(name=record.domain)
                     if s.name.startswith(CHECKPOINT_PREFIX))

    def delete_checkpoint(self, *, name: str, label: str) -> None:
        ctx = self._ctx
        label = _checkpoint_label(label)
        with workspace_lock(paths=ctx.paths, name=name):
            record = load_ready_record(ctx=ctx, name=name)
            self._require_checkpoint(record=record, label=label)
            ctx.backend.delete_snapshot(name=record.domain, snapshot=CHECKPOINT_PREFIX + label)
            ctx.audit(name=name).append(event="checkpoint.deleted", details={"label": label})

    def _sync(self, record: WorkspaceRecord, *, mark_clean: bool = False) -> None:
        """Flush the guest's page cache first. A RAM snapshot holds dirty pages that the
        disk does not: after a revert, a forced power-off before they are written back
        would leave files (cloud-init's SSH host keys, say) empty on the next cold boot.
        `mark_clean` (the clean snapshot only): also leave the marker that session receipts
        compare the guest's files against."""
        target = ssh_target(record=record, files=self._ctx.records.files(name=record.name))
        try:
            self._ctx.guest.run_command(target=target, argv=list(MARK_CLEAN_ARGV) if mark_clean else ["sync"],
                                        stdout=lambda _: None, stderr=lambda _: None, timeout_s=120)
        except GuestError:
            pass  # an unreachable guest still gets its snapshot; only the flush is lost

    def _require_checkpoint(self, *, record: WorkspaceRecord, label: str) -> None:
        names = {s.name for s in self._ctx.backend.list_snapshots(name=record.domain)}
        if CHECKPOINT_PREFIX + label not in names:
            raise NotFound(f"workspace {record.name!r} has no checkpoint {label!r}",
                           hint=f"agentbox checkpoints {record.name} lists them")


def _session_id(path: Path) -> str:
    try:
        return str(json.loads(path.read_text(encoding="utf-8")).get("id", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def _checkpoint_label(label: str) -> str:
    if label == RESERVED_LABEL:
        raise InvalidInput("'clean' is the workspace's clean state, not a checkpoint",
                           hint="agentbox reset NAME returns to it; agentbox reclean NAME replaces it")
    return validate_label(label, what="checkpoint label")


def _next_clean_name(*, existing: Sequence[SnapshotInfo]) -> str:
    numbers = [int(s.name[len(CLEAN_PREFIX):]) for s in existing
               if s.name.startswith(CLEAN_PREFIX) and s.name[len(CLEAN_PREFIX):].isdigit()]
    return f"{CLEAN_PREFIX}{max(numbers, default=0) + 1}"


def _as_checkpoint(snap: SnapshotInfo) -> Checkpoint:
    return Checkpoint(label=snap.name.removeprefix(CHECKPOINT_PREFIX), created=snap.created,
                      with_memory=snap.with_memory)


def _details(outcome: RestoreOutcome) -> dict[str, object]:
    return {"target": outcome.target, "path": outcome.path.value, "reason": outcome.reason,
            "duration_s": round(outcome.duration_s, 3), "running": outcome.running,
            "clock_skew_s": None if outcome.clock_skew_s is None else round(outcome.clock_skew_s, 3)}
