"""Standby: a paused copy of a workspace's clean state, ready in a second domain, so that a
reset is a swap to it (resume, one SSH round trip) instead of destroy → revert → refresh.

A workspace with standby has two domains, NAME and NAME.b (stores/records.py, SLOT_B): the
record names the one that runs; the other holds the copy. It costs one more guest's RAM
while it stands by, so it is off unless the template (`standby: true`) or the user
(`agentbox standby NAME on`) asks for it.

- **export** (the first reset with standby on, and the first after a reclean): right after
  the revert to clean, the guest's RAM is saved (the domain stops, so its disk is exactly
  the clean state), the disk's own data is copied over its base into `clean-N.qcow2`
  (read-only from then on), and the RAM is restored into the same domain: it runs clean, as
  after any revert. `clean-N.save` keeps the RAM.
- **prepare** (after an export, after each swap, after a start): the other slot's old domain
  and disk go; a new overlay on `clean-N.qcow2`, a domain defined as the workspace's own
  (services/golden.py, clone_spec) on a spare port, the RAM restored into it paused, and an
  internal clean snapshot of it, so that slot, once it runs, resets in place like any
  workspace (with checkpoints, or with standby off).
- **swap** (a reset while a copy is ready and no checkpoint lives on the running disk, see
  services/snapshots.py): the running guest is paused and gives up the SSH port, the copy
  takes it (the port never changes: SSH clients, the managed ssh config and the egress
  forward keep 127.0.0.1:PORT) and resumes; the record names it; the old domain is
  destroyed once the workspace is back, and a new copy is prepared in its slot.
- **discard** (stop, standby off, reclean, destroy): the copy's domain and disk go.

Each step that fails leaves the workspace as a reset without standby would: the reset
itself never fails for standby's sake (the failure is logged and audited).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from agentbox.backends.base import DomainState
from agentbox.errors import AgentboxError, InvalidInput, NotFound
from agentbox.host.locks import workspace_lock
from agentbox.images.store import ImageInfo
from agentbox.model.progress import CancelToken, Progress, ProgressCallback
from agentbox.services.context import ServiceContext
from agentbox.services.golden import GoldenStore, clone_spec
from agentbox.services.lookup import load_ready_record
from agentbox.services.ssh_ports import free_ssh_port
from agentbox.stores.records import WorkspaceRecord, WorkspaceStorage, other_slot, slot_of

STANDBY_SNAPSHOT = "clean-1"  # the copy's own clean state, in its fresh overlay
# SnapshotService.reset_locked, passed in (snapshots builds on this module).
LockedReset = Callable[[WorkspaceRecord, ProgressCallback, CancelToken], object]

log = logging.getLogger(__name__)


class Standby:
    def __init__(self, *, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def problem(self, *, record: WorkspaceRecord) -> str:
        """Why this workspace cannot have a copy standing by ("" when it can)."""
        if not self._ctx.backend.capabilities_of(name=record.domain).standby:
            return "its backend cannot keep a paused copy ready (libvirt on this machine can)"
        if record.inspection:
            return "it holds restored evidence, whose disk is no clean state"
        if not record.clean_snapshot:
            return f"its clean state has no RAM snapshot ({record.clean_fallback or 'none was taken'})"
        return ""

    def wanted(self, *, record: WorkspaceRecord) -> bool:
        return record.standby and not self.problem(record=record)

    def ready(self, *, record: WorkspaceRecord) -> bool:
        if not record.standby_snapshot:
            return False
        info = self._ctx.backend.get(name=other_slot(record.domain))
        return info is not None and info.state is DomainState.PAUSED

    # -- export -------------------------------------------------------------------------

    def keep_clean(self, *, record: WorkspaceRecord, on_progress: ProgressCallback) -> WorkspaceRecord:
        """Create, right after the clean snapshot and with nothing plugged in yet: the export
        standby copies are made of, or standby off (and why) where it cannot be; the copy
        itself is prepared once the workspace is ready."""
        if not record.standby:
            return record
        if problem := self.problem(record=record):
            on_progress(Progress(step="standby", detail=f"no standby copy: {problem}"))
            return replace(record, standby=False)
        return self.export(record=record, on_progress=on_progress)

    def export(self, *, record: WorkspaceRecord, on_progress: ProgressCallback) -> WorkspaceRecord:
        """The running domain was just reverted to clean (nothing plugged in yet): keep that
        state as export N. On any failure the domain is reverted to clean again and the
        record is unchanged."""
        ctx = self._ctx
        storage = record.storage
        number = 1 + max((_export_number(p) for p in storage.directory.glob("clean-*.qcow2")), default=0)
        base, base_format = self._disk_base(record=record)
        disk, memory = storage.clean_disk(number), storage.clean_memory(number)
        on_progress(Progress(step="standby", detail=f"keeping the clean state for standby copies (export {number})"))
        started = time.monotonic()
        try:
            ctx.backend.save_memory(name=record.domain, path=memory)
            try:
                ctx.backend.export_disk(source=storage.disk, target=disk, base=base, base_format=base_format)
                disk.chmod(0o444)  # every copy's overlay reads through it; nothing writes it again
            finally:
                ctx.backend.restore_memory(name=record.domain, path=memory)
        except AgentboxError as exc:
            self._failed(record=record, step="export", exc=exc)
            for path in (disk, memory):
                path.unlink(missing_ok=True)
            if (info := ctx.backend.get(name=record.domain)) is None or info.state is not DomainState.RUNNING:
                ctx.backend.destroy(name=record.domain)
                ctx.backend.revert_snapshot(name=record.domain, snapshot=record.clean_snapshot)
            return record
        for older in storage.directory.glob("clean-*.save"):
            if _export_number(older) != number:
                older.unlink(missing_ok=True)  # only the newest export's RAM is ever restored
        updated = replace(record, standby_export=number)
        ctx.records.save(record=updated)
        ctx.audit(name=record.name).append(event="standby.exported", details={
            "export": number, "disk_bytes": disk.stat().st_size, "duration_s": round(time.monotonic() - started, 3)})
        return updated

    def _disk_base(self, *, record: WorkspaceRecord) -> tuple[Path, str]:
        """What the running slot's disk sits on: an earlier export, a golden state, the image."""
        if record.disk_export:
            return record.storage.clean_disk(record.disk_export), "qcow2"
        if record.golden_id:
            golden = GoldenStore(ctx=self._ctx).get(golden_id=record.golden_id)
            if golden is None:
                raise NotFound(f"the golden state {record.golden_id} of workspace {record.name!r} is gone")
            return golden.disk, "qcow2"
        image = self._image(record=record)
        return image.disk, image.disk_format

    # -- prepare --------------------------------------------------------------------------

    def prepare(self, *, record: WorkspaceRecord, on_progress: ProgressCallback) -> WorkspaceRecord:
        """A paused copy of export N in the other slot, unless one is ready (or standby is
        off, or there is no export yet)."""
        if not self.wanted(record=record) or not record.standby_export or self.ready(record=record):
            return record
        ctx = self._ctx
        record = self.discard(record=record)
        slot = other_slot(record.domain)
        storage = WorkspaceStorage(directory=record.storage.directory, slot=slot_of(slot))
        on_progress(Progress(step="standby", detail=f"preparing a paused clean copy for the next reset ({slot})"))
        started = time.monotonic()
        try:
            image = self._image(record=record)
            port = free_ssh_port(ctx=ctx)
            ctx.backend.create_overlay(path=storage.disk, backing=record.storage.clean_disk(record.standby_export),
                                       backing_format="qcow2", size_gib=record.resources.disk_gib)
            ctx.backend.define(spec=clone_spec(
                ctx=ctx, name=slot, workspace=record.name, template=record.template, resources=record.resources,
                image=image, disk=storage.disk, seed=record.storage.seed, ssh_port=port,
                console_log=storage.console_log, created=record.created))
            ctx.backend.restore_memory(name=slot, path=record.storage.clean_memory(record.standby_export),
                                       paused=True)
            ctx.backend.create_snapshot(name=slot, snapshot=STANDBY_SNAPSHOT,
                                        description=f"agentbox clean state of {record.name} (standby copy)")
        except AgentboxError as exc:
            self._failed(record=record, step="prepare", exc=exc)
            return self.discard(record=record)
        updated = replace(record, standby_snapshot=STANDBY_SNAPSHOT, standby_port=port)
        ctx.records.save(record=updated)
        ctx.audit(name=record.name).append(event="standby.ready", details={
            "domain": slot, "export": record.standby_export, "duration_s": round(time.monotonic() - started, 3)})
        return updated

    # -- swap -----------------------------------------------------------------------------

    def swap(self, *, record: WorkspaceRecord) -> WorkspaceRecord:
        """The copy takes over: the record names it from now on. The old domain is left
        paused and without its port, for `retire`. On failure, the record is unchanged and
        the copy is gone; the caller resets in place (the old domain's next QEMU takes the
        port from its definition again)."""
        ctx = self._ctx
        old, new = record.domain, other_slot(record.domain)
        try:
            ctx.backend.pause(name=old)  # the session's guest stops at once
            ctx.backend.drop_ssh_port(name=old, port=record.ssh_port)
            ctx.backend.move_ssh_port(name=new, old_port=record.standby_port, new_port=record.ssh_port)
            ctx.backend.resume(name=new)
        except AgentboxError as exc:
            self._failed(record=record, step="swap", exc=exc)
            self.discard(record=record)
            raise
        swapped = replace(record, domain=new, clean_snapshot=record.standby_snapshot, clean_fallback="",
                          standby_snapshot="", standby_port=0, disk_export=record.standby_export)
        ctx.records.save(record=swapped)
        ctx.audit(name=record.name).append(event="standby.swapped", details={"from": old, "to": new})
        return swapped

    def retire(self, *, record: WorkspaceRecord) -> None:
        """After a swap: the old domain (the other slot now) goes, with its disk."""
        self._remove_slot(record=record)

    # -- discard --------------------------------------------------------------------------

    def discard(self, *, record: WorkspaceRecord, saved_ram_too: bool = False) -> WorkspaceRecord:
        """The other slot's domain and disk go (what stands by, or what a crash left there);
        with `saved_ram_too` (standby off) the exports' RAM files too. The exports' disks stay:
        the running disk may sit on them."""
        self._remove_slot(record=record)
        if saved_ram_too:
            for memory in record.storage.directory.glob("clean-*.save"):
                memory.unlink(missing_ok=True)
        if not (record.standby_snapshot or record.standby_port or (saved_ram_too and record.standby_export)):
            return record
        updated = replace(record, standby_snapshot="", standby_port=0,
                          standby_export=0 if saved_ram_too else record.standby_export)
        self._ctx.records.save(record=updated)
        return updated

    def _remove_slot(self, *, record: WorkspaceRecord) -> None:
        ctx = self._ctx
        slot = other_slot(record.domain)
        if ctx.backend.get(name=slot) is not None:
            ctx.backend.destroy(name=slot)
            ctx.backend.undefine(name=slot)
        ctx.backend.delete_volume(path=WorkspaceStorage(directory=record.storage.directory, slot=slot_of(slot)).disk)

    # -- helpers --------------------------------------------------------------------------

    def _image(self, *, record: WorkspaceRecord) -> ImageInfo:
        for image in self._ctx.images.list_images():
            if image.image_id == record.image_id:
                return image
        raise NotFound(f"the base image {record.image_id} of workspace {record.name!r} is gone",
                       hint=f"agentbox image pull {record.template}")

    def _failed(self, *, record: WorkspaceRecord, step: str, exc: AgentboxError) -> None:
        log.warning("%s: standby %s failed: %s", record.name, step, exc.message)
        try:
            self._ctx.audit(name=record.name).append(event="standby.failed", details={
                "step": step, "error": exc.message})
        except AgentboxError:
            pass  # the warning above still says it


class StandbyService:
    """`agentbox standby NAME on|off` and the template's `standby: true` at create."""

    def __init__(self, *, ctx: ServiceContext, reset_locked: LockedReset) -> None:
        self._ctx = ctx
        self._standby = Standby(ctx=ctx)
        self._reset_locked = reset_locked

    def set(self, *, name: str, on: bool, on_progress: ProgressCallback, cancel: CancelToken) -> WorkspaceRecord:
        """On: a running workspace is reset (its clean state is what the copy is made of), so
        not during a session; a stopped one gets its copy at its next reset. Off: the copy
        and the saved RAM go; the workspace runs on as it is."""
        ctx = self._ctx
        with workspace_lock(paths=ctx.paths, name=name):
            record = load_ready_record(ctx=ctx, name=name)
            if on == record.standby:
                return record
            if not on:
                record = self._standby.discard(record=replace(record, standby=False), saved_ram_too=True)
                ctx.records.save(record=record)
                ctx.audit(name=name).append(event="standby.off")
                return record
            if problem := self._standby.problem(record=record):
                raise InvalidInput(f"workspace {name!r} cannot have standby: {problem}",
                                   hint="resets still work: they revert in place")
            if ctx.records.files(name=name).session.exists():
                raise InvalidInput(f"a session is running in {name!r}, and turning standby on resets the workspace",
                                   hint=f"end it first: agentbox session end {name}")
            record = replace(record, standby=True)
            ctx.records.save(record=record)
            ctx.audit(name=name).append(event="standby.on")
            info = ctx.backend.get(name=record.domain)
            if info is not None and info.state is DomainState.RUNNING:
                self._reset_locked(record, on_progress, cancel)
            return ctx.records.load(name=name) or record


def _export_number(path: Path) -> int:
    stem = path.name.split(".", 1)[0].removeprefix("clean-")
    return int(stem) if stem.isdigit() else 0
