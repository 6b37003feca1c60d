"""The outbox's size limit, enforced on the host: the outbox folder is the mountpoint of a
fixed-size filesystem the host made (host/outbox_disk.py), so a guest that fills it gets
ENOSPC and the host's disk keeps the rest.

The image is made when the outbox is first plugged in (create, or the first start or reset
of a workspace from before limits, whose files it takes in), mounted again whenever it is
needed and not mounted (after a host restart: by `start` before the guest sees it, or by a
listing), and removed with the workspace. Without a way to enforce a limit (not root, no
e2fsprogs) the guest gets no outbox at all: agentbox never hands it an unbounded host folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from agentbox.config.settings import OUTBOX_LIMIT_RANGE_MIB
from agentbox.errors import InvalidInput
from agentbox.host import outbox_disk
from agentbox.host.bind_mounts import folder_bytes
from agentbox.services.context import ServiceContext
from agentbox.stores.records import WorkspaceRecord, WorkspaceStorage

GUEST_UID = 1000  # the first user cloud-init creates: the agent
_MIB = 1 << 20
_MIGRATION_ROOM = 64 * _MIB  # an outbox from before limits that holds more than the limit gets this much free


@dataclass(frozen=True)
class OutboxUsage:
    used_bytes: int
    limit_bytes: int  # what the guest can store in all; 0 when nothing enforces a limit
    note: str = ""  # when no limit is enforced (yet): why, and what happens next

    @property
    def enforced(self) -> bool:
        return self.limit_bytes > 0


class OutboxLimit:
    def __init__(self, *, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def ready_for_guest(self, *, record: WorkspaceRecord) -> bool:
        """Before the outbox is plugged in (the guest has no outbox now): its filesystem is
        mounted, made first if need be; False when this host cannot enforce a limit, and the
        outbox must then stay unplugged."""
        storage = record.storage
        if outbox_disk.unavailable_reason():
            return False
        if storage.outbox_image.exists():
            outbox_disk.mount(image=storage.outbox_image, mountpoint=storage.outbox)
        else:
            self._make(record=record)
        if not outbox_disk.is_mounted_image(image=storage.outbox_image, mountpoint=storage.outbox):
            return False  # never export the bare folder beneath
        root = storage.outbox
        os.chown(root, GUEST_UID, GUEST_UID)  # the guest's agent writes as itself
        os.chmod(root, 0o770)
        return True

    def ensure_mounted(self, *, record: WorkspaceRecord) -> None:
        """For a host-side read: mount an existing image that a host restart unmounted."""
        storage = record.storage
        if storage.outbox_image.exists() and not outbox_disk.unavailable_reason():
            outbox_disk.mount(image=storage.outbox_image, mountpoint=storage.outbox)

    def usage(self, *, record: WorkspaceRecord) -> OutboxUsage:
        storage = record.storage
        if storage.outbox_image.exists():
            reason = outbox_disk.unavailable_reason()
            if reason:
                return OutboxUsage(used_bytes=0, limit_bytes=0, note=f"cannot mount the outbox here: {reason}")
            self.ensure_mounted(record=record)
            disk = outbox_disk.usage(mountpoint=storage.outbox)
            return OutboxUsage(used_bytes=disk.used, limit_bytes=disk.capacity // _MIB * _MIB)
        used = folder_bytes(storage.outbox) if storage.outbox.is_dir() else 0
        reason = outbox_disk.unavailable_reason()
        if reason:
            return OutboxUsage(used_bytes=used, limit_bytes=0,
                               note=f"no outbox in the guest: {reason}, and agentbox never gives a guest "
                                    "an unlimited host folder")
        return OutboxUsage(used_bytes=used, limit_bytes=0,
                           note=f"no size limit yet (an outbox from before limits): the {self.limit_mib(record)} "
                                f"MiB limit is applied at the next start or reset of {record.name}")

    def limit_mib(self, record: WorkspaceRecord) -> int:
        return record.outbox_limit_mib or self._ctx.settings.outbox_limit_mib

    def resize(self, *, record: WorkspaceRecord, limit_mib: int) -> None:
        """Resize an existing image; the workspace is stopped."""
        storage = record.storage
        outbox_disk.mount(image=storage.outbox_image, mountpoint=storage.outbox)
        outbox_disk.resize(image=storage.outbox_image, mountpoint=storage.outbox, capacity=limit_mib * _MIB)

    def check_new_limit(self, *, record: WorkspaceRecord, limit_mib: int) -> None:
        """InvalidInput unless `limit_mib` is in range and holds what the outbox holds now."""
        validate_limit_mib(limit_mib, option="--limit-mib")
        used = self.usage(record=record).used_bytes
        if used > limit_mib * _MIB:
            raise InvalidInput(f"the outbox of {record.name} holds {used / _MIB:.1f} MiB, more than {limit_mib} MiB",
                               hint=f"export what you need (agentbox outbox {record.name} --export DIR), "
                                    f"clear it (--clear), then lower the limit")

    def remove(self, *, storage: WorkspaceStorage) -> None:
        """Destroy: nothing of the outbox stays mounted or on disk."""
        if storage.directory.is_dir():
            outbox_disk.remove(image=storage.outbox_image, mountpoint=storage.outbox)

    def _make(self, *, record: WorkspaceRecord) -> None:
        storage = record.storage
        capacity = self.limit_mib(record) * _MIB
        old = storage.outbox if storage.outbox.is_dir() and any(storage.outbox.iterdir()) else None
        if old is not None:
            # An outbox from before limits: its files move into the image, which holds at
            # least them (the guest is not attached meanwhile, so nothing changes under the copy).
            held = folder_bytes(old)
            if held + held // 8 > capacity:  # more than the limit already: room for them, and some
                capacity = (held + held // 8 + _MIGRATION_ROOM) // _MIB * _MIB
        outbox_disk.create(image=storage.outbox_image, mountpoint=storage.outbox, capacity=capacity,
                           owner=GUEST_UID, populate_from=old)
        if old is not None or not record.outbox_limit_mib:  # a new workspace's limit is in its `created` record
            self._ctx.audit(name=record.name).append(event="outbox.limited", details={
                "limit_mib": capacity // _MIB, "migrated_bytes": folder_bytes(storage.outbox)})


def validate_limit_mib(value: int, *, option: str) -> int:
    low, high = OUTBOX_LIMIT_RANGE_MIB
    if not low <= value <= high:
        raise InvalidInput(f"{option} {value} is out of range {low}..{high} (MiB)")
    return value
