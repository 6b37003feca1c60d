"""Named checkpoints of a workspace: its state (with RAM when it runs) kept under a label,
to return to with `restore`, until deleted. They are internal snapshots of the running
domain's disk, beside the clean one (services/snapshots.py)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from agentbox.backends.base import DomainState, SnapshotInfo
from agentbox.errors import AgentboxError, BackendError, GuestError, InvalidInput, NotFound
from agentbox.host.locks import workspace_lock
from agentbox.model.names import validate_label
from agentbox.provision.guest_changes import MARK_CLEAN_ARGV
from agentbox.services.anchoring import anchor_trail
from agentbox.services.attachments import Attachments
from agentbox.services.context import ServiceContext
from agentbox.services.lookup import load_ready_record
from agentbox.services.ssh_access import ssh_target
from agentbox.stores.records import WorkspaceRecord

CHECKPOINT_PREFIX = "checkpoint-"
RESERVED_LABEL = "clean"


@dataclass(frozen=True)
class Checkpoint:
    label: str
    created: str
    with_memory: bool


class Checkpoints:
    def __init__(self, *, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._attachments = Attachments(ctx=ctx)

    def checkpoint(self, *, name: str, label: str) -> Checkpoint:
        ctx = self._ctx
        label = checkpoint_label(label)
        with workspace_lock(paths=ctx.paths, name=name):
            record = load_ready_record(ctx=ctx, name=name)
            info = ctx.backend.get(name=record.domain)
            running = info is not None and info.state is DomainState.RUNNING
            if running and not ctx.backend.capabilities_of(name=record.domain).ram_snapshots:
                raise InvalidInput("this backend cannot save a running guest's RAM",
                                   hint=f"stop the workspace first (agentbox stop {name}) for a disk-only checkpoint")
            if running:
                flush_guest(ctx=ctx, record=record)
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
        label = checkpoint_label(label)
        with workspace_lock(paths=ctx.paths, name=name):
            record = load_ready_record(ctx=ctx, name=name)
            require_checkpoint(ctx=ctx, record=record, label=label)
            ctx.backend.delete_snapshot(name=record.domain, snapshot=CHECKPOINT_PREFIX + label)
            ctx.audit(name=name).append(event="checkpoint.deleted", details={"label": label})



def flush_guest(*, ctx: ServiceContext, record: WorkspaceRecord, mark_clean: bool = False) -> None:
    """Flush the guest's page cache before a snapshot. A RAM snapshot holds dirty pages that the
    disk does not: after a revert, a forced power-off before they are written back
    would leave files (cloud-init's SSH host keys, say) empty on the next cold boot.
    `mark_clean` (the clean snapshot only): also leave the marker that session receipts
    compare the guest's files against."""
    target = ssh_target(record=record, files=ctx.records.files(name=record.name))
    try:
        ctx.guest.run_command(target=target, argv=list(MARK_CLEAN_ARGV) if mark_clean else ["sync"],
                              stdout=lambda _: None, stderr=lambda _: None, timeout_s=120)
    except GuestError:
        pass  # an unreachable guest still gets its snapshot; only the flush is lost


def has_checkpoints(*, ctx: ServiceContext, record: WorkspaceRecord) -> bool:
    return any(s.name.startswith(CHECKPOINT_PREFIX) for s in ctx.backend.list_snapshots(name=record.domain))


def require_checkpoint(*, ctx: ServiceContext, record: WorkspaceRecord, label: str) -> None:
    names = {s.name for s in ctx.backend.list_snapshots(name=record.domain)}
    if CHECKPOINT_PREFIX + label not in names:
        raise NotFound(f"workspace {record.name!r} has no checkpoint {label!r}",
                       hint=f"agentbox checkpoints {record.name} lists them")


def checkpoint_label(label: str) -> str:
    if label == RESERVED_LABEL:
        raise InvalidInput("'clean' is the workspace's clean state, not a checkpoint",
                           hint="agentbox reset NAME returns to it; agentbox reclean NAME replaces it")
    return validate_label(label, what="checkpoint label")


def _as_checkpoint(snap: SnapshotInfo) -> Checkpoint:
    return Checkpoint(label=snap.name.removeprefix(CHECKPOINT_PREFIX), created=snap.created,
                      with_memory=snap.with_memory)
