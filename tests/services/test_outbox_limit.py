"""The outbox's size limit on the Fake backend, with the real mechanism: an ext4 image
formatted and loop-mounted on this host (the tests run as root). Host-side writes into the
mount stand in for the guest's (the vm tests write from inside a real guest, through
virtiofsd)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from agentbox.errors import InvalidInput
from agentbox.host import bind_mounts, outbox_disk
from agentbox.model.progress import CancelToken
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.services.outbox import OutboxService
from agentbox.services.snapshots import SnapshotService
from agentbox.services.workspaces import WorkspaceService
from agentbox.stores.records import WorkspaceRecord

from .conftest import World

pytestmark = pytest.mark.skipif(bool(outbox_disk.unavailable_reason()), reason=outbox_disk.unavailable_reason())
DOMAIN = "agentbox-ws"
MIB = 1 << 20


def make(world: World, **kwargs: object) -> WorkspaceRecord:
    return create_workspace(ctx=world.ctx, request=CreateRequest(name="ws", **kwargs),  # type: ignore[arg-type]
                            on_progress=world.progress.append, cancel=CancelToken())


def fill(folder: Path, *, name: str = "big", mib: int) -> int:
    """Write up to `mib` MiB into folder/name; the errno it stopped with (0 if none)."""
    chunk = b"\xa5" * MIB
    with open(folder / name, "wb") as out:
        try:
            for _ in range(mib):
                out.write(chunk)
                out.flush()
            os.fsync(out.fileno())
        except OSError as error:
            return error.errno or -1
    return 0


def events(world: World) -> list[dict[str, object]]:
    return [json.loads(line) for line in world.ctx.paths.audit_log("ws").read_text().splitlines()]


def loop_devices_of(image: Path) -> list[str]:
    done = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True, check=True)
    return [line for line in done.stdout.splitlines() if line.strip()]


def test_the_outbox_holds_its_limit_and_not_a_byte_more(world: World) -> None:
    record = make(world, outbox_mib=32)
    outbox = OutboxService(ctx=world.ctx)
    box = outbox.directory(name="ws")
    assert outbox_disk.is_mounted_image(image=record.storage.outbox_image, mountpoint=box)
    assert "agentbox-outbox" in world.backend.attached(name=DOMAIN)[0]
    assert world.backend.attached_filesystem(DOMAIN, "agentbox-outbox").source == box
    usage = outbox.usage(name="ws")
    assert usage.enforced and usage.limit_bytes == 32 * MIB and usage.used_bytes < MIB
    assert outbox.list(name="ws") == ()  # no lost+found to puzzle anyone
    assert fill(box, mib=40) == errno.ENOSPC
    full = outbox.usage(name="ws")
    assert 31 * MIB < full.used_bytes <= 33 * MIB and full.limit_bytes == 32 * MIB
    # The host's disk pays for what the guest wrote, not more (the image is sparse).
    assert os.stat(record.storage.outbox_image).st_blocks * 512 < 40 * MIB
    [created] = [e for e in events(world) if e["event"] == "created"]
    assert created["details"]["outbox_mib"] == 32


def test_the_default_limit_comes_from_the_settings(world: World) -> None:
    world.ctx = replace(world.ctx, settings=replace(world.ctx.settings, outbox_limit_mib=20))
    make(world)
    assert OutboxService(ctx=world.ctx).usage(name="ws").limit_bytes == 20 * MIB
    with pytest.raises(InvalidInput, match="--outbox-mib 8 is out of range"):
        create_workspace(ctx=world.ctx, request=CreateRequest(name="other", outbox_mib=8),
                         on_progress=world.progress.append, cancel=CancelToken())


def test_after_a_host_restart_start_mounts_the_outbox_before_the_guest_gets_it(world: World) -> None:
    record = make(world, outbox_mib=16)
    outbox = OutboxService(ctx=world.ctx)
    (outbox.directory(name="ws") / "result.txt").write_text("kept\n")
    # A host restart: the VM is gone and so is every mount.
    world.backend.destroy(name=DOMAIN)
    subprocess.run(["umount", str(record.storage.outbox)], check=True)
    assert not bind_mounts.is_mounted(record.storage.outbox)
    WorkspaceService(ctx=world.ctx).start(name="ws", on_progress=world.progress.append, cancel=CancelToken())
    assert outbox_disk.is_mounted_image(image=record.storage.outbox_image, mountpoint=record.storage.outbox)
    assert (record.storage.outbox / "result.txt").read_text() == "kept\n"
    assert outbox.usage(name="ws").limit_bytes == 16 * MIB


def test_a_listing_after_a_host_restart_mounts_the_outbox_again(world: World) -> None:
    record = make(world, outbox_mib=16)
    outbox = OutboxService(ctx=world.ctx)
    (outbox.directory(name="ws") / "result.txt").write_text("kept\n")
    WorkspaceService(ctx=world.ctx).stop(name="ws", force=True, on_progress=world.progress.append,
                                         cancel=CancelToken())
    subprocess.run(["umount", str(record.storage.outbox)], check=True)
    assert [e.path for e in outbox.list(name="ws")] == ["result.txt"]  # not the empty folder beneath
    assert outbox.usage(name="ws").enforced


def test_destroy_leaves_no_mount_no_loop_device_and_no_image(world: World) -> None:
    record = make(world, outbox_mib=16)
    assert fill(OutboxService(ctx=world.ctx).directory(name="ws"), mib=4) == 0
    image = record.storage.outbox_image
    WorkspaceService(ctx=world.ctx).destroy(name="ws", on_progress=world.progress.append)
    assert not bind_mounts.is_mounted(record.storage.outbox)
    assert not image.exists() and not record.storage.directory.exists()
    assert world.leftovers() == []
    assert not any(str(image) in line for line in subprocess.run(
        ["losetup", "-a"], capture_output=True, text=True, check=True).stdout.splitlines() if "(deleted)" not in line)


def test_the_outbox_keeps_its_files_and_limit_through_reset_and_checkpoint(world: World) -> None:
    record = make(world, outbox_mib=16)
    outbox = OutboxService(ctx=world.ctx)
    (outbox.directory(name="ws") / "result.txt").write_text("kept\n")
    SnapshotService(ctx=world.ctx).reset(name="ws", on_progress=world.progress.append, cancel=CancelToken())
    SnapshotService(ctx=world.ctx).checkpoint(name="ws", label="one")
    assert "agentbox-outbox" in world.backend.attached(name=DOMAIN)[0]
    assert (record.storage.outbox / "result.txt").read_text() == "kept\n"
    assert outbox.usage(name="ws").limit_bytes == 16 * MIB
    assert len(loop_devices_of(record.storage.outbox_image)) == 1  # never mounted twice


def test_the_limit_can_grow_and_shrink_but_not_below_what_is_there(world: World) -> None:
    make(world, outbox_mib=32)
    outbox, workspaces = OutboxService(ctx=world.ctx), WorkspaceService(ctx=world.ctx)
    assert fill(outbox.directory(name="ws"), mib=20) == 0
    # A running VM's QEMU holds a copy of the mount: the filesystem is resized only while stopped.
    with pytest.raises(InvalidInput, match="ws is running: its outbox can be resized only while it is stopped"):
        outbox.set_limit(name="ws", limit_mib=64)
    workspaces.stop(name="ws", force=True, on_progress=world.progress.append, cancel=CancelToken())
    with pytest.raises(InvalidInput, match=r"holds 20\.\d MiB, more than 16 MiB") as refused:
        outbox.set_limit(name="ws", limit_mib=16)
    assert "--export" in (refused.value.hint or "")
    assert outbox.usage(name="ws").limit_bytes == 32 * MIB
    grown = outbox.set_limit(name="ws", limit_mib=64)
    assert grown.limit_bytes == 64 * MIB and 19 * MIB < grown.used_bytes < 22 * MIB
    workspaces.start(name="ws", on_progress=world.progress.append, cancel=CancelToken())
    assert "agentbox-outbox" in world.backend.attached(name=DOMAIN)[0]
    assert fill(outbox.directory(name="ws"), name="more", mib=30) == 0
    (outbox.directory(name="ws") / "more").unlink()
    workspaces.stop(name="ws", force=True, on_progress=world.progress.append, cancel=CancelToken())
    assert outbox.set_limit(name="ws", limit_mib=24).limit_bytes == 24 * MIB
    assert (outbox.directory(name="ws") / "big").stat().st_size == 20 * MIB  # the files survive a shrink
    assert world.ctx.records.load(name="ws").outbox_limit_mib == 24  # a lost image is made again at this size
    assert [e["details"] for e in events(world) if e["event"] == "outbox.limit_set"] == [
        {"limit_mib": 64}, {"limit_mib": 24}]
    with pytest.raises(InvalidInput, match="out of range"):
        outbox.set_limit(name="ws", limit_mib=2 << 20)


def older_outbox(world: World, record: WorkspaceRecord, files: dict[str, bytes]) -> None:
    """Turn a workspace into one from before limits: a plain folder, no image, no limit asked."""
    WorkspaceService(ctx=world.ctx).stop(name="ws", force=True, on_progress=world.progress.append,
                                         cancel=CancelToken())
    outbox_disk.remove(image=record.storage.outbox_image, mountpoint=record.storage.outbox)
    record.storage.outbox.mkdir()
    for name, data in files.items():
        (record.storage.outbox / name).parent.mkdir(parents=True, exist_ok=True)
        (record.storage.outbox / name).write_bytes(data)
    (record.storage.outbox / "link").symlink_to("/etc/shadow")
    world.ctx.records.save(record=replace(world.ctx.records.load(name="ws"), outbox_limit_mib=0))


def test_an_outbox_from_before_limits_gets_one_at_the_next_start_with_its_files(world: World) -> None:
    world.ctx = replace(world.ctx, settings=replace(world.ctx.settings, outbox_limit_mib=24))
    record = make(world)
    older_outbox(world, record, {"result.txt": b"old result\n", "sub/data.bin": b"\0" * 4096})
    outbox = OutboxService(ctx=world.ctx)
    usage = outbox.usage(name="ws")
    assert not usage.enforced and "applied at the next start or reset" in usage.note
    assert usage.used_bytes == len(b"old result\n") + 4096
    WorkspaceService(ctx=world.ctx).start(name="ws", on_progress=world.progress.append, cancel=CancelToken())
    assert outbox_disk.is_mounted_image(image=record.storage.outbox_image, mountpoint=record.storage.outbox)
    assert outbox.usage(name="ws").limit_bytes == 24 * MIB
    assert {e.path: e.kind for e in outbox.list(name="ws")} == {
        "link": "symlink", "result.txt": "file", "sub": "dir", "sub/data.bin": "file"}
    assert os.readlink(record.storage.outbox / "link") == "/etc/shadow"  # copied as a link, never followed
    assert (record.storage.outbox / "result.txt").read_bytes() == b"old result\n"
    [limited] = [e for e in events(world) if e["event"] == "outbox.limited" and "migrated_bytes" in e["details"]]
    assert limited["details"] == {"limit_mib": 24, "migrated_bytes": 4096 + len(b"old result\n")}
    # Nothing of the old folder is left beneath the mount.
    subprocess.run(["umount", str(record.storage.outbox)], check=True)
    assert list(record.storage.outbox.iterdir()) == []


def test_an_older_outbox_fuller_than_the_limit_gets_room_for_its_files(world: World) -> None:
    world.ctx = replace(world.ctx, settings=replace(world.ctx.settings, outbox_limit_mib=16))
    record = make(world)
    older_outbox(world, record, {"big.bin": b"\1" * (20 * MIB)})
    WorkspaceService(ctx=world.ctx).start(name="ws", on_progress=world.progress.append, cancel=CancelToken())
    usage = OutboxService(ctx=world.ctx).usage(name="ws")
    assert usage.enforced and usage.limit_bytes > 20 * MIB and usage.used_bytes >= 20 * MIB
    assert (record.storage.outbox / "big.bin").stat().st_size == 20 * MIB


def test_where_no_limit_can_be_enforced_the_guest_gets_no_outbox(world: World,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # This host can (it runs as root); a host that cannot is told apart by this one function.
    monkeypatch.setattr(outbox_disk, "unavailable_reason", lambda: "a loop mount needs root")
    make(world)
    assert "agentbox-outbox" not in world.backend.attached(name=DOMAIN)[0]
    usage = OutboxService(ctx=world.ctx).usage(name="ws")
    assert not usage.enforced and "no outbox in the guest: a loop mount needs root" in usage.note
