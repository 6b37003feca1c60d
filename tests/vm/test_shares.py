"""Read-only shares and the outbox, from inside a real guest, for every mechanism this host
can run. Whatever the guest does as root, the host folder stays as it was."""

from __future__ import annotations

import os
import shutil
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentbox.cli.main import main
from agentbox.errors import InvalidInput
from agentbox.model.progress import CancelToken
from agentbox.model.shares import ShareMechanism

from .conftest import VmEnv, quiet, run_in

MECHANISMS = [ShareMechanism.VIRTIOFS_RO_BIND, ShareMechanism.COPY_DISK]
ATTACKS = {
    "write": "echo x > {d}/new-file",
    "overwrite": "echo x > {d}/hello.txt",
    "remount-rw": "mount -o remount,rw {d} && echo x > {d}/after-remount",
    "mknod": "mknod {d}/dev-null c 1 3",
    "chmod": "chmod 777 {d}/hello.txt",
    "chown": "chown 1000:1000 {d}/hello.txt",
    "setfattr": "python3 -c \"import os; os.setxattr('{d}/hello.txt', 'user.x', b'1')\"",
    "ln": "ln -s /etc/passwd {d}/evil-link",
    "rm": "rm -f {d}/hello.txt",
    "truncate": "truncate -s 0 {d}/hello.txt",
}


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "hello.txt").write_text("hello from the host\n")
    secret = tmp_path / "outside-secret.txt"
    secret.write_text("host secret\n")
    (folder / "escape").symlink_to(secret)  # points outside the shared folder
    os.chmod(tmp_path, 0o755)
    return folder


def snapshot_of(folder: Path) -> dict[str, tuple[int, int, str]]:
    return {str(p.relative_to(folder)): (p.lstat().st_mode, p.lstat().st_uid,
                                          os.readlink(p) if p.is_symlink() else p.read_text())
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(params=MECHANISMS, ids=lambda m: m.value)
def shared(request: pytest.FixtureRequest, vm_env: VmEnv, clean_workspace: str,
           project: Path) -> Iterator[tuple[str, str, ShareMechanism]]:
    mechanism: ShareMechanism = request.param
    shares = vm_env.services().shares
    share = shares.add(name=clean_workspace, source=str(project), tag="proj", mechanism=mechanism.value).share
    assert share.mechanism is mechanism
    yield clean_workspace, f"/mnt/shares/{share.tag}", mechanism
    shares.remove(name=clean_workspace, tag=share.tag)


def test_the_guest_reads_a_share_and_root_cannot_change_it(
        vm_env: VmEnv, shared: tuple[str, str, ShareMechanism], project: Path) -> None:
    name, guest_dir, _ = shared
    before = snapshot_of(project)
    assert run_in(vm_env, name, "cat", f"{guest_dir}/hello.txt")[1] == "hello from the host\n"
    for attack, command in ATTACKS.items():
        code, out, err = run_in(vm_env, name, "sudo", "sh", "-c", command.format(d=guest_dir))
        assert code != 0, f"{attack} succeeded in the guest: {out}{err}"
    assert snapshot_of(project) == before


def test_a_symlink_pointing_outside_does_not_expose_the_host_file(
        vm_env: VmEnv, shared: tuple[str, str, ShareMechanism]) -> None:
    name, guest_dir, _ = shared
    code, out, _ = run_in(vm_env, name, "sh", "-c", f"cat {guest_dir}/escape 2>&1 || true")
    assert "host secret" not in out


def test_live_shares_show_host_changes_and_copies_do_not(
        vm_env: VmEnv, shared: tuple[str, str, ShareMechanism], project: Path) -> None:
    name, guest_dir, mechanism = shared
    (project / "later.txt").write_text("written on the host later\n")
    code, out, _ = run_in(vm_env, name, "sh", "-c",
                          f"for i in $(seq 20); do cat {guest_dir}/later.txt 2>/dev/null && exit 0; sleep 0.5; done;"
                          " echo absent")
    assert out.strip() == ("written on the host later" if mechanism.live else "absent")


def test_shares_come_back_after_reset_and_stop_start(
        vm_env: VmEnv, shared: tuple[str, str, ShareMechanism]) -> None:
    name, guest_dir, _ = shared
    services = vm_env.services()
    services.snapshots.reset(name=name, on_progress=quiet, cancel=CancelToken())
    assert run_in(vm_env, name, "cat", f"{guest_dir}/hello.txt")[1] == "hello from the host\n"
    services.workspaces.stop(name=name, force=False, on_progress=quiet, cancel=CancelToken())
    services.workspaces.start(name=name, on_progress=quiet, cancel=CancelToken())
    assert run_in(vm_env, name, "cat", f"{guest_dir}/hello.txt")[1] == "hello from the host\n"
    [status] = services.shares.list(name=name)
    assert status.attached


def test_share_add_and_rm_on_a_running_workspace(vm_env: VmEnv, clean_workspace: str, project: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    vm_env.cli_env(monkeypatch)
    assert main(["share", "add", clean_workspace, str(project), "--tag", "live"]) == 0
    assert run_in(vm_env, clean_workspace, "cat", "/mnt/shares/live/hello.txt")[0] == 0
    assert main(["share", "list", clean_workspace]) == 0
    assert "virtiofs-ro-bind" in capsys.readouterr().out
    assert main(["share", "rm", clean_workspace, "live"]) == 0
    assert run_in(vm_env, clean_workspace, "sh", "-c", "cat /mnt/shares/live/hello.txt")[0] != 0
    assert vm_env.services().shares.list(name=clean_workspace) == ()


OTHER_UID = 4242  # neither root nor the guest's user


@pytest.fixture()
def private_folder(tmp_path: Path) -> Path:
    """What `mktemp -d` and a careful user make: 0700 folders, 0600 files, owned by someone
    who is neither root nor the guest's user; plus a FIFO, which no share can carry."""
    folder = tmp_path / "private"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("top secret notes\n")
    (folder / "sub" / "deep.txt").write_text("deeper\n")
    os.mkfifo(folder / "pipe")
    for path in (folder / "notes.txt", folder / "sub" / "deep.txt"):
        os.chmod(path, 0o600)
    for path in (folder, folder / "sub"):
        os.chmod(path, 0o700)
    for path in (folder, folder / "sub", folder / "notes.txt", folder / "sub" / "deep.txt", folder / "pipe"):
        os.chown(path, OTHER_UID, OTHER_UID)
    os.chmod(tmp_path, 0o755)
    return folder


@pytest.mark.parametrize("mechanism", MECHANISMS, ids=lambda m: m.value)
def test_the_guest_user_reads_a_private_folder_of_another_owner_and_cannot_write_it(
        vm_env: VmEnv, clean_workspace: str, private_folder: Path, mechanism: ShareMechanism,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    vm_env.cli_env(monkeypatch)
    before = snapshot_of(private_folder / "sub") | {"notes.txt": (private_folder / "notes.txt").stat().st_mode}
    assert main(["share", "add", clean_workspace, str(private_folder), "--tag", "priv",
                 "--mechanism", mechanism.value]) == 0
    said = capsys.readouterr()
    assert "shared read-only at /mnt/shares/priv" in said.out
    # Honest about the one thing that cannot be read: the FIFO.
    assert "1 item(s) cannot be read in the guest (pipe: a socket, FIFO or device" in said.err
    assert "hint: " in said.err
    d = "/mnt/shares/priv"
    try:
        code, out, err = run_in(vm_env, clean_workspace, "sh", "-c", f"id -u; ls {d} {d}/sub")
        assert code == 0, err
        uid, *listing = out.split()
        assert uid != "0" and {"notes.txt", "sub", "deep.txt"} <= set(listing)
        assert run_in(vm_env, clean_workspace, "cat", f"{d}/notes.txt", f"{d}/sub/deep.txt")[:2] == (
            0, "top secret notes\ndeeper\n")
        for write in (f"echo x > {d}/new", f"echo x >> {d}/notes.txt", f"echo x > {d}/sub/new",
                      f"mkdir {d}/dir", f"rm -f {d}/sub/deep.txt", f"touch {d}/sub/deep.txt"):
            code, out, err = run_in(vm_env, clean_workspace, "sh", "-c", write)
            assert code != 0, f"{write} succeeded as the guest's user"
        [status] = [s for s in vm_env.services().shares.list(name=clean_workspace) if s.share.tag == "priv"]
        assert status.attached
    finally:
        assert main(["share", "rm", clean_workspace, "priv"]) == 0
    assert (private_folder / "notes.txt").read_text() == "top secret notes\n"
    assert snapshot_of(private_folder / "sub") | {"notes.txt": (private_folder / "notes.txt").stat().st_mode} \
        == before


def test_without_bindfs_share_add_names_what_the_guest_user_cannot_read(
        vm_env: VmEnv, clean_workspace: str, private_folder: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Why bindfs: the guest kernel checks the host's owner and mode that virtiofsd reports,
    so a plain read-only bind of a 0700 folder is closed to the guest's user, and share add
    says so."""
    tools = tmp_path / "bin"  # this host's tools, less bindfs
    tools.mkdir()
    for tool in ("mount", "umount"):
        (tools / tool).symlink_to(shutil.which(tool) or tool)
    monkeypatch.setenv("PATH", str(tools))
    vm_env.cli_env(monkeypatch)
    assert main(["share", "add", clean_workspace, str(private_folder), "--tag", "plain",
                 "--mechanism", "virtiofs-ro-bind"]) == 0
    said = capsys.readouterr().err
    assert "item(s) cannot be read in the guest (.: owner 4242, mode 0700" in said and "bindfs" in said
    try:
        code, _, err = run_in(vm_env, clean_workspace, "ls", "/mnt/shares/plain")
        assert code != 0 and "Permission denied" in err
        assert run_in(vm_env, clean_workspace, "sudo", "cat", "/mnt/shares/plain/notes.txt")[1] == "top secret notes\n"
    finally:
        assert main(["share", "rm", clean_workspace, "plain"]) == 0


@pytest.mark.parametrize("bad", ["/", "~", "~/.ssh", "/nonexistent-agentbox-dir"])
def test_dangerous_or_missing_folders_are_refused(vm_env: VmEnv, clean_workspace: str, bad: str) -> None:
    (Path.home() / ".ssh").mkdir(exist_ok=True)
    with pytest.raises(InvalidInput):
        vm_env.services().shares.add(name=clean_workspace, source=bad)


def test_the_outbox_carries_results_out_and_survives_a_reset(vm_env: VmEnv, clean_workspace: str,
                                                             tmp_path: Path) -> None:
    services = vm_env.services()
    script = ("echo result > /mnt/outbox/result.txt && ln -s /etc/shadow /mnt/outbox/shadow-link"
              " && sudo mkfifo /mnt/outbox/pipe && sync")
    assert run_in(vm_env, clean_workspace, "sh", "-c", script)[0] == 0
    # virtiofsd refuses device nodes: no guest can plant /dev/sda's twin on the host.
    assert run_in(vm_env, clean_workspace, "sudo", "mknod", "/mnt/outbox/disk", "b", "8", "0")[0] != 0
    services.snapshots.reset(name=clean_workspace, on_progress=quiet, cancel=CancelToken())
    assert run_in(vm_env, clean_workspace, "cat", "/mnt/outbox/result.txt")[1] == "result\n"
    kinds = {e.path: e.kind for e in services.outbox.list(name=clean_workspace)}
    assert kinds == {"result.txt": "file", "shadow-link": "symlink", "pipe": "other"}
    result = services.outbox.export(name=clean_workspace, dest=tmp_path / "out")
    assert result.copied == ("result.txt",)
    assert sorted(path for path, _ in result.skipped) == ["pipe", "shadow-link"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["result.txt"]
    assert services.outbox.clear(name=clean_workspace) == 3
    assert services.outbox.list(name=clean_workspace) == ()


def test_the_guest_as_root_cannot_write_past_the_outbox_limit(vm_env: VmEnv, clean_workspace: str,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    vm_env.cli_env(monkeypatch)
    name, services = clean_workspace, vm_env.services()
    assert main(["outbox", name, "--limit-mib", "32"]) == 2  # refused while QEMU holds the mount
    assert "is running" in capsys.readouterr().err
    services.workspaces.stop(name=name, force=True, on_progress=quiet, cancel=CancelToken())
    try:
        assert main(["outbox", name, "--limit-mib", "32"]) == 0
        services.snapshots.reset(name=name, on_progress=quiet, cancel=CancelToken())  # back in seconds
        code, out, _ = run_in(vm_env, name, "sh", "-c", "df -k --output=avail /mnt/outbox | tail -1")
        assert code == 0 and 31 * 1024 < int(out) <= 33 * 1024, out  # the guest sees the limit as its room
        fill = ("dd if=/dev/zero of=/mnt/outbox/fill bs=1M count=64 conv=fsync 2>&1; "
                "fallocate -l 8M /mnt/outbox/more 2>&1; "
                "for i in $(seq 200); do echo x > /mnt/outbox/small-$i 2>/dev/null || exit 0; done; echo all-written")
        code, out, _ = run_in(vm_env, name, "sudo", "sh", "-c", fill)
        assert out.count("No space left on device") >= 2, out  # dd and fallocate, as root
        assert "all-written" not in out
        capsys.readouterr()
        assert main(["outbox", name]) == 0
        first = capsys.readouterr().out.splitlines()[0]
        assert re.match(r"used 3[12]\.\d MiB of 32\.0 MiB \(\d+%\), limit enforced on the host", first), first
    finally:
        services.outbox.clear(name=name)
        services.workspaces.stop(name=name, force=True, on_progress=quiet, cancel=CancelToken())
        assert main(["outbox", name, "--limit-mib", "1024"]) == 0  # as the other tests expect it
        services.snapshots.reset(name=name, on_progress=quiet, cancel=CancelToken())
    assert run_in(vm_env, name, "sh", "-c", "echo back > /mnt/outbox/after.txt")[0] == 0
