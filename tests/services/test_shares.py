"""Shares and the outbox on the Fake backend, with real copy disks and real read-only bind
mounts (the tests run as root, as CI does)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from agentbox.backends.base import DomainState
from agentbox.errors import InvalidInput, NotFound
from agentbox.model.progress import CancelToken
from agentbox.host import bind_mounts
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.services.outbox import OutboxService
from agentbox.services.shares import ShareService
from agentbox.services.snapshots import SnapshotService
from agentbox.services.workspaces import WorkspaceService

from .conftest import World

DOMAIN = "agentbox-ws"


def make(world: World, **kwargs: object) -> None:
    create_workspace(ctx=world.ctx, request=CreateRequest(name="ws", **kwargs),  # type: ignore[arg-type]
                     on_progress=world.progress.append, cancel=CancelToken())


def audit_events(world: World) -> list[str]:
    return [json.loads(line)["event"] for line in world.ctx.paths.audit_log("ws").read_text().splitlines()]


def test_a_copy_share_is_a_read_only_disk_mounted_by_the_guest(world: World, project: Path) -> None:
    make(world)
    share = ShareService(ctx=world.ctx).add(name="ws", source=str(project), mechanism="copy-disk").share
    assert share.tag == "project" and not share.mechanism.live
    _, serials = world.backend.attached(name=DOMAIN)
    [serial] = serials
    image = Path(world.ctx.records.load(name="ws").storage_dir) / "share-project.img"
    assert image.stat().st_mode & 0o222 == 0  # never writable
    assert subprocess.run(["debugfs", "-R", "cat /readme.md", str(image)], capture_output=True, text=True,
                          check=True).stdout == "hello\n"
    assert any(f"virtio-{serial}" in " ".join(c) for c in world.guest.commands)
    assert "share.added" in audit_events(world)
    [status] = ShareService(ctx=world.ctx).list(name="ws")
    assert status.attached and not status.live


def test_a_read_only_bind_share_cannot_be_written_on_the_host_side(world: World, project: Path) -> None:
    make(world)
    ShareService(ctx=world.ctx).add(name="ws", source=str(project), tag="code", mechanism="virtiofs-ro-bind")
    fs = world.backend.attached_filesystem(DOMAIN, "code")
    assert fs.driver == "virtiofs" and fs.source != project
    assert bind_mounts.is_readonly_mount(fs.source)
    with pytest.raises(OSError):  # what virtiofsd would meet for the guest
        (fs.source / "new").write_text("x")
    ShareService(ctx=world.ctx).remove(name="ws", tag="code")
    assert not bind_mounts.is_mounted(fs.source) and not fs.source.exists()
    assert (project / "readme.md").read_text() == "hello\n"


def test_shares_follow_start_stop_reset_and_checkpoints(world: World, project: Path) -> None:
    make(world, shares=(f"{project}:code",))
    shares, workspaces = ShareService(ctx=world.ctx), WorkspaceService(ctx=world.ctx)
    assert "code" in world.backend.attached(name=DOMAIN)[0]
    fs = world.backend.attached_filesystem(DOMAIN, "code")
    workspaces.stop(name="ws", force=True, on_progress=world.progress.append, cancel=CancelToken())
    assert not bind_mounts.is_mounted(fs.source)  # released with the VM
    workspaces.start(name="ws", on_progress=world.progress.append, cancel=CancelToken())
    assert "code" in world.backend.attached(name=DOMAIN)[0]
    SnapshotService(ctx=world.ctx).reset(name="ws", on_progress=world.progress.append, cancel=CancelToken())
    assert {"code", "agentbox-outbox"} <= world.backend.attached(name=DOMAIN)[0]
    # The Fake, like QEMU, refuses a RAM snapshot with virtiofs attached: agentbox unplugs first.
    SnapshotService(ctx=world.ctx).checkpoint(name="ws", label="one")
    assert "code" in world.backend.attached(name=DOMAIN)[0]
    assert [s.share.tag for s in shares.list(name="ws")] == ["code"]
    workspaces.destroy(name="ws", on_progress=world.progress.append)
    assert not bind_mounts.is_mounted(fs.source) and world.leftovers() == []


def test_a_share_added_to_a_stopped_workspace_waits_for_its_start(world: World, project: Path) -> None:
    make(world)
    world.backend.set_state(DOMAIN, DomainState.STOPPED)
    ShareService(ctx=world.ctx).add(name="ws", source=str(project), mechanism="copy-disk")
    [status] = ShareService(ctx=world.ctx).list(name="ws")
    assert not status.attached


def test_duplicate_tags_unknown_shares_and_bad_mechanisms_are_refused(world: World, project: Path) -> None:
    make(world)
    shares = ShareService(ctx=world.ctx)
    shares.add(name="ws", source=str(project), mechanism="copy-disk")
    with pytest.raises(InvalidInput, match="already has a share"):
        shares.add(name="ws", source=str(project), mechanism="copy-disk")
    with pytest.raises(NotFound):
        shares.remove(name="ws", tag="nope")
    with pytest.raises(InvalidInput, match="unknown share mechanism"):
        shares.add(name="ws", source=str(project), tag="x", mechanism="writable")
    with pytest.raises(InvalidInput, match="cannot be used here"):
        shares.add(name="ws", source=str(project), tag="y", mechanism="9p-readonly")


def test_create_refuses_a_bad_share_before_making_anything(world: World, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no such folder"):
        make(world, shares=(str(tmp_path / "missing"),))
    assert world.backend.calls == [] and world.leftovers() == []


def test_a_system_folder_is_shared_only_when_asked_and_a_credential_folder_never(
        world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "looks-harmless").symlink_to("/etc/apt")
    make(world)
    shares = ShareService(ctx=world.ctx)
    with pytest.raises(InvalidInput, match="system folder /etc") as refused:
        shares.add(name="ws", source=str(tmp_path / "looks-harmless"))
    assert "--allow-system-folder" in (refused.value.hint or "")
    share = shares.add(name="ws", source=str(tmp_path / "looks-harmless"), tag="apt", mechanism="virtiofs-ro-bind",
                       allow_system_folder=True).share
    assert share.source == "/etc/apt"
    shares.remove(name="ws", tag="apt")
    with pytest.raises(InvalidInput, match="credentials live"):
        shares.add(name="ws", source=str(home / ".aws"), allow_system_folder=True)
    assert [s.share.tag for s in shares.list(name="ws")] == []


def test_create_shares_a_system_folder_only_when_asked(world: World) -> None:
    with pytest.raises(InvalidInput, match="system folder /etc"):
        make(world, shares=("/etc/apt:apt",))
    assert world.backend.calls == [] and world.leftovers() == []
    make(world, shares=("/etc/apt:apt",), allow_system_folder=True)
    assert [s.share.source for s in ShareService(ctx=world.ctx).list(name="ws")] == ["/etc/apt"]
    ShareService(ctx=world.ctx).remove(name="ws", tag="apt")  # its read-only bind mount goes with it


def test_leftover_bind_mounts_of_stopped_workspaces_are_cleaned(world: World, project: Path) -> None:
    make(world)
    ShareService(ctx=world.ctx).add(name="ws", source=str(project), tag="code", mechanism="virtiofs-ro-bind")
    fs = world.backend.attached_filesystem(DOMAIN, "code")
    world.backend.set_state(DOMAIN, DomainState.STOPPED)  # the VM died; agentbox never saw it stop
    world.egress.running.discard("ws")  # and its supervisor went with it
    assert bind_mounts.is_mounted(fs.source)
    WorkspaceService(ctx=world.ctx).list()
    assert bind_mounts.is_mounted(fs.source), "a read changes nothing"
    seen: list[bool] = []
    boot = world.backend.start

    def start_and_look(*, name: str) -> None:
        seen.append(bind_mounts.is_mounted(fs.source))
        boot(name=name)

    world.backend.start = start_and_look  # type: ignore[method-assign]
    WorkspaceService(ctx=world.ctx).start(name="ws", on_progress=lambda _: None, cancel=CancelToken())
    assert seen == [False], "start released the stale mount under the lock before booting"
    ShareService(ctx=world.ctx).remove(name="ws", tag="code")


def test_outbox_export_copies_regular_files_only(world: World, tmp_path: Path) -> None:
    make(world)
    outbox = OutboxService(ctx=world.ctx)
    box = outbox.directory(name="ws")
    (box / "sub").mkdir()
    (box / "sub" / "result.txt").write_text("42\n")
    (box / "passwd").symlink_to("/etc/passwd")
    os.mkfifo(box / "pipe")
    result = outbox.export(name="ws", dest=tmp_path / "out")
    assert result.copied == ("sub/result.txt",)
    assert sorted(p for p, _ in result.skipped) == ["passwd", "pipe"]
    assert (tmp_path / "out" / "sub" / "result.txt").read_text() == "42\n"
    assert not (tmp_path / "out" / "passwd").exists()
    with pytest.raises(InvalidInput, match="export limit"):
        outbox.export(name="ws", dest=tmp_path / "again", limit_bytes=1)
    assert outbox.clear(name="ws") == 3 and outbox.list(name="ws") == ()
    assert audit_events(world)[-1] == "outbox.cleared"


@pytest.fixture()
def private(tmp_path: Path) -> Path:
    """0700 folders and 0600 files of uid 4242 (neither root nor the guest's user), a FIFO and
    a socket: what the guest's user must be able to read, and what no share can carry."""
    folder = tmp_path / "private"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("notes\n")
    (folder / "sub" / "run.sh").write_text("#!/bin/sh\n")
    (folder / "link").symlink_to("sub/run.sh")
    os.mkfifo(folder / "pipe")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(folder / "sub" / "sock"))
    os.chmod(folder / "notes.txt", 0o600)
    os.chmod(folder / "sub" / "run.sh", 0o700)
    for path in (folder, folder / "sub"):
        os.chmod(path, 0o700)
    for path in folder.rglob("*"):
        os.lchown(path, 4242, 4242)
    os.chown(folder, 4242, 4242)
    return folder


def storage_of(world: World) -> Path:
    record = world.ctx.records.load(name="ws")
    assert record is not None
    return Path(record.storage_dir)


def debugfs_stat(image: Path, path: str) -> tuple[int, int]:
    """(uid, mode) of `path` inside an ext4 image."""
    out = subprocess.run(["debugfs", "-R", f"stat {path}", str(image)], capture_output=True, text=True,
                         check=True).stdout
    uid = int(re.search(r"User:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    mode = int(re.search(r"Mode:\s+0?(\d+)", out).group(1), 8)  # type: ignore[union-attr]
    return uid, mode


def test_a_copy_of_a_private_folder_is_the_guest_users_and_says_what_it_left_out(world: World,
                                                                                  private: Path) -> None:
    make(world)
    added = ShareService(ctx=world.ctx).add(name="ws", source=str(private), mechanism="copy-disk")
    image = storage_of(world) / "share-private.img"
    assert {path: debugfs_stat(image, path) for path in ("/", "/notes.txt", "/sub", "/sub/run.sh")} == {
        "/": (1000, 0o755), "/notes.txt": (1000, 0o644), "/sub": (1000, 0o755), "/sub/run.sh": (1000, 0o755)}
    listing = subprocess.run(["debugfs", "-R", "ls -p /", str(image)], capture_output=True, text=True,
                             check=True).stdout
    assert "/link/" in listing and "/pipe/" not in listing
    assert added.not_readable.count == 2
    assert sorted(path for path, _ in added.not_readable.examples) == ["pipe", "sub/sock"]
    assert "left out of the copy" in added.hint
    assert not list(image.parent.glob(".*staging")), "the staging copy is gone"
    assert (private / "notes.txt").stat().st_uid == 4242 and (private / "notes.txt").stat().st_mode & 0o777 == 0o600


def test_a_live_share_shows_every_file_readable_by_the_guest_user_and_stays_read_only(world: World,
                                                                                      private: Path) -> None:
    make(world)
    added = ShareService(ctx=world.ctx).add(name="ws", source=str(private), tag="p", mechanism="virtiofs-ro-bind")
    view = world.backend.attached_filesystem(DOMAIN, "p").source
    try:
        seen = {path: (view / path).lstat() for path in ("notes.txt", "sub", "sub/run.sh")}
        assert {path: (st.st_uid, st.st_gid, st.st_mode & 0o777) for path, st in seen.items()} == {
            "notes.txt": (1000, 1000, 0o444), "sub": (1000, 1000, 0o555), "sub/run.sh": (1000, 1000, 0o555)}
        assert bind_mounts.is_readonly_mount(view)
        for write in (lambda: (view / "new").write_text("x"), lambda: (view / "notes.txt").write_text("x"),
                      lambda: os.chmod(view / "notes.txt", 0o666), lambda: os.chown(view / "notes.txt", 0, 0)):
            with pytest.raises(OSError):  # root on the host, through what virtiofsd exports
                write()
        assert [path for path, _ in added.not_readable.examples] == ["pipe", "sub/sock"]
    finally:
        ShareService(ctx=world.ctx).remove(name="ws", tag="p")
    assert not bind_mounts.is_mounted(view)
    assert (private / "notes.txt").read_text() == "notes\n" and (private / "notes.txt").stat().st_mode & 0o777 == 0o600


def test_without_bindfs_a_live_share_says_which_files_the_guest_user_cannot_read(
        world: World, private: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tools = tmp_path / "bin"  # this host's tools, less bindfs
    tools.mkdir()
    for tool in ("mount", "umount", "mkfs.ext4"):
        (tools / tool).symlink_to(shutil.which(tool) or tool)
    monkeypatch.setenv("PATH", str(tools))
    make(world)
    added = ShareService(ctx=world.ctx).add(name="ws", source=str(private), tag="p", mechanism="virtiofs-ro-bind")
    view = world.backend.attached_filesystem(DOMAIN, "p").source
    try:
        assert view.stat().st_uid == 4242  # a plain read-only bind: the host's owners and modes
        denied = dict(added.not_readable.examples)
        assert added.not_readable.count == 6  # ., notes.txt, sub, sub/run.sh (host modes), pipe, sub/sock
        assert denied["."] == "owner 4242, mode 0700" and denied["notes.txt"] == "owner 4242, mode 0600"
        assert "bindfs" in added.hint
    finally:
        ShareService(ctx=world.ctx).remove(name="ws", tag="p")


def test_destroy_removes_the_staging_copy_an_interrupted_copy_share_left(world: World, private: Path) -> None:
    make(world)
    storage = storage_of(world)
    left = storage / ".share-private.img.x1y2.staging"  # what a SIGKILL during mkfs leaves
    (left / "sub").mkdir(parents=True)
    (left / "sub" / "notes.txt").write_text("copy\n")
    WorkspaceService(ctx=world.ctx).destroy(name="ws", on_progress=lambda _: None)
    assert not storage.exists()
    assert (private / "notes.txt").read_text() == "notes\n"
