"""The debian-12 recipe: its hash, the root check, and the build steps with faked tools."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest

from agentbox.errors import Cancelled, ImageError, InvalidInput, PermissionDenied, ToolFailed
from agentbox.images import debian_build
from agentbox.images import tools as tools_module
from agentbox.images.debian_build import (
    DEFAULT_MIRROR,
    MIRROR_ENV,
    build_debian_image,
    check_build_prerequisites,
    recipe_for,
)
from agentbox.images.store import ImageStore
from agentbox.model.progress import CancelToken, Progress, ignore_progress
from agentbox.model.template import BuildRecipe, Template

KERNEL_VERSION = "6.1.0-50-cloud-amd64"


def test_recipe_hash_is_stable() -> None:
    first, second = recipe_for(name="debian-12"), recipe_for(name="debian-12")
    assert first.key() == second.key()
    assert len(first.key()) == 64 and int(first.key(), 16) >= 0


@pytest.mark.parametrize(
    "change",
    [
        {"packages": recipe_for(name="debian-12").packages + ("git",)},
        {"packages": tuple(p for p in recipe_for(name="debian-12").packages if p != "curl")},
        {"suite": "trixie"},
        {"disk_size_gib": 4},
        {"variant": "buildd"},
    ],
)
def test_recipe_hash_changes_with_what_changes_the_image(change: dict[str, object]) -> None:
    recipe = recipe_for(name="debian-12")
    assert dataclasses.replace(recipe, **change).key() != recipe.key()


def test_recipe_hash_changes_with_the_build_version(monkeypatch: pytest.MonkeyPatch) -> None:
    before = recipe_for(name="debian-12").key()
    monkeypatch.setattr(debian_build, "BUILD_VERSION", debian_build.BUILD_VERSION + 1)
    assert recipe_for(name="debian-12").key() != before


def test_recipe_hash_covers_the_guest_files(monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = recipe_for(name="debian-12")
    before = recipe.key()
    original = debian_build.DebianRecipe.guest_files

    def changed(self: debian_build.DebianRecipe) -> dict[str, str]:
        return {**original(self), "/etc/fstab": "LABEL=other / ext4 defaults 0 1\n"}

    monkeypatch.setattr(debian_build.DebianRecipe, "guest_files", changed)
    assert recipe.key() != before


def test_recipe_hash_ignores_the_mirror(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    default = recipe_for(name="debian-12")
    assert default.mirror == DEFAULT_MIRROR == "http://deb.debian.org/debian"
    store = ImageStore(image_dir=tmp_path)
    template = Template(name="t", description="", image=BuildRecipe(recipe="debian-12"))
    image_id = store.image_id_for(template=template)

    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:3142/debian")
    local = recipe_for(name="debian-12")
    assert local.mirror == "http://127.0.0.1:3142/debian"
    assert local.key() == default.key()
    assert dataclasses.replace(default, mirror="http://elsewhere/debian").key() == default.key()
    assert store.image_id_for(template=template) == image_id
    assert image_id == f"debian-12-{default.key()[:12]}"


def test_unknown_recipe_names_the_known_ones() -> None:
    with pytest.raises(InvalidInput, match="debian-12"):
        recipe_for(name="debian-13")


def test_building_as_non_root_is_refused_with_the_sudo_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(debian_build.os, "geteuid", lambda: 1000)
    with pytest.raises(PermissionDenied, match="root") as info:
        check_build_prerequisites(recipe=recipe_for(name="debian-12"))
    assert info.value.hint == "sudo agentbox image build debian-12"

    # The store refuses before it creates anything.
    image_dir = tmp_path / "images"
    template = Template(name="t", description="", image=BuildRecipe(recipe="debian-12"))
    with pytest.raises(PermissionDenied):
        ImageStore(image_dir=image_dir).ensure(template=template, on_progress=ignore_progress,
                                               cancel=CancelToken())
    assert not image_dir.exists()


def test_missing_build_tools_name_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debian_build.os, "geteuid", lambda: 0)
    monkeypatch.setattr(tools_module.shutil, "which", lambda name, path=None: None)
    with pytest.raises(ImageError, match="debootstrap") as info:
        check_build_prerequisites(recipe=recipe_for(name="debian-12"))
    assert info.value.hint == "apt-get install debootstrap e2fsprogs qemu-utils"


# -- the build steps, with every external tool faked ---------------------------------------


class FakeTools:
    """Stands in for run_tool: records argv and fakes what each tool leaves behind."""

    def __init__(self, *, debootstrap: str = "ok", fix_up_fails: bool = False,
                 cancel_at: str | None = None) -> None:
        self.debootstrap = debootstrap  # "ok" | "unconfigured" | "early"
        self.fix_up_fails = fix_up_fails
        self.cancel_at = cancel_at
        self.calls: list[list[str]] = []
        self.tree: dict[str, str | None] = {}  # the root tree as mkfs saw it (None = dir)

    def names(self) -> list[str]:
        return [" ".join([Path(argv[0]).name, *argv[2:5]]) if Path(argv[0]).name == "chroot"
                else Path(argv[0]).name for argv in self.calls]

    def __call__(self, argv: list[str], *, cancel: CancelToken, env=None,
                 capture_stdout: bool = False, on_line=None) -> str:
        self.calls.append(list(argv))
        tool = Path(argv[0]).name
        if tool == self.cancel_at:
            raise Cancelled("cancelled by the user")
        if tool == "debootstrap":
            assert env is not None and env["DEBIAN_FRONTEND"] == "noninteractive"
            self._debootstrap(Path(argv[-2]))
        elif tool == "chroot":
            if self.fix_up_fails and argv[2:4] == ["apt-get", "install"]:
                raise ToolFailed("apt-get failed (exit code 100):\n  E: Unable to locate package")
        elif tool == "mkfs.ext4":
            root = Path(argv[argv.index("-d") + 1])
            self.tree = {
                "/" + str(p.relative_to(root)): (None if p.is_dir() else p.read_text())
                for p in root.rglob("*")
            }
            Path(argv[-2]).write_bytes(b"raw")
        elif tool == "qemu-img":
            Path(argv[-1]).write_bytes(b"qcow2")
        return ""

    def _debootstrap(self, root: Path) -> None:
        if self.debootstrap == "early":
            raise ToolFailed("debootstrap failed (exit code 1):\n  E: Failed getting release file")
        files = {
            "usr/bin/dpkg": "",
            "usr/sbin/useradd": "",
            f"boot/vmlinuz-{KERNEL_VERSION}": "kernel",
            f"boot/initrd.img-{KERNEL_VERSION}": "initrd",
            "boot/vmlinuz-6.1.0-9-cloud-amd64": "old kernel",
            "boot/initrd.img-6.1.0-9-cloud-amd64": "old initrd",
            "etc/ssh/ssh_host_ed25519_key": "secret",
            "etc/ssh/ssh_host_rsa_key.pub": "public",
            "etc/ssh/sshd_config": "config",
            "etc/machine-id": "0123456789abcdef\n",
            "etc/hostname": "buildhost\n",
            "etc/resolv.conf": "nameserver 10.0.0.1\n",
            "var/lib/dbus/machine-id": "0123456789abcdef\n",
            "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease": "lists",
            "debootstrap/debootstrap.log": "log",
        }
        for name, content in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(content)
        if self.debootstrap == "unconfigured":
            raise ToolFailed("debootstrap failed (exit code 1):\n  W: Failure while configuring")


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTools:
    tools = FakeTools()
    monkeypatch.setattr(debian_build.os, "geteuid", lambda: 0)
    monkeypatch.setattr(tools_module, "find_tool", lambda name, *, package: f"/usr/sbin/{name}")
    monkeypatch.setattr(debian_build, "run_tool", tools)
    return tools


def _build(out_dir: Path, **kwargs: object):
    recipe = dataclasses.replace(recipe_for(name="debian-12"), mirror="http://127.0.0.1:9/debian")
    kwargs.setdefault("on_progress", ignore_progress)
    kwargs.setdefault("cancel", CancelToken())
    return build_debian_image(recipe=recipe, out_dir=out_dir, **kwargs)  # type: ignore[arg-type]


def test_build_steps_and_guest_configuration(fake: FakeTools, tmp_path: Path) -> None:
    events: list[Progress] = []
    built = _build(tmp_path, on_progress=events.append)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.qcow2", "initrd.img", "vmlinuz"]
    assert built.disk == tmp_path / "disk.qcow2" and built.disk_format == "qcow2"
    assert built.kernel.read_text() == "kernel" and built.initrd.read_text() == "initrd"  # newest
    assert stat.S_IMODE(built.kernel.stat().st_mode) == 0o444
    assert built.cmdline == "root=LABEL=agentbox-root ro"

    debootstrap = fake.calls[0]
    assert debootstrap[1:3] == ["--variant=minbase", f"--include={','.join(recipe_for(name='debian-12').packages)}"]
    assert debootstrap[3] == "bookworm" and debootstrap[5] == "http://127.0.0.1:9/debian"
    assert "linux-image-cloud-amd64" in debootstrap[2] and "cloud-init" in debootstrap[2]
    assert fake.names() == [
        "debootstrap",
        "chroot dpkg --configure -a",
        "chroot dpkg --audit",
        "chroot apt-get clean",
        "mkfs.ext4",
        "qemu-img",
    ]
    mkfs = fake.calls[4]
    assert mkfs[1:4] == ["-q", "-L", "agentbox-root"] and mkfs[-1] == "3G"
    assert fake.calls[5][1:4] == ["convert", "-O", "qcow2"]

    tree = fake.tree
    assert tree["/etc/fstab"] == "LABEL=agentbox-root / ext4 defaults 0 1\n"
    assert tree["/etc/cloud/cloud.cfg.d/90-agentbox.cfg"] == "datasource_list: [ NoCloud, None ]\n"
    assert tree["/etc/hostname"] == "localhost\n"
    assert tree["/etc/machine-id"] == ""
    assert "deb.debian.org" in (tree["/etc/apt/sources.list"] or "")
    assert "127.0.0.1:9" not in (tree["/etc/apt/sources.list"] or "")  # the build mirror stays out
    assert not [p for p in tree if p.startswith("/etc/ssh/ssh_host_")]
    assert "/etc/ssh/sshd_config" in tree
    for gone in ("/var/lib/dbus/machine-id", "/etc/resolv.conf", "/debootstrap", "/usr/sbin/policy-rc.d"):
        assert gone not in tree
    assert not [p for p in tree if p.startswith("/var/lib/apt/lists/")]

    assert [(e.step, e.index, e.total) for e in events] == [
        (step, index, 6)
        for index, step in enumerate(
            ["debootstrap", "fix up packages", "configure guest", "extract kernel",
             "make file system", "convert to qcow2"], start=1)
    ]


def test_unconfigured_packages_after_debootstrap_are_fixed_up(fake: FakeTools, tmp_path: Path) -> None:
    fake.debootstrap = "unconfigured"
    _build(tmp_path)
    assert fake.names()[:4] == [
        "debootstrap",
        "chroot apt-get install -y",
        "chroot dpkg --configure -a",
        "chroot dpkg --audit",
    ]
    assert fake.calls[1][-1] == "python3-cffi-backend"


def test_a_failed_fix_up_is_fatal_and_cleans_up(fake: FakeTools, tmp_path: Path) -> None:
    fake.debootstrap = "unconfigured"
    fake.fix_up_fails = True
    with pytest.raises(ToolFailed) as info:
        _build(tmp_path)
    assert "debootstrap failed" in info.value.message and "Unable to locate" in info.value.message
    assert list(tmp_path.iterdir()) == []


def test_debootstrap_failing_before_install_is_fatal(fake: FakeTools, tmp_path: Path) -> None:
    fake.debootstrap = "early"
    with pytest.raises(ToolFailed, match="release file") as info:
        _build(tmp_path)
    assert MIRROR_ENV in (info.value.hint or "")
    assert fake.names() == ["debootstrap"]
    assert list(tmp_path.iterdir()) == []


def test_cancel_during_the_build_cleans_up(fake: FakeTools, tmp_path: Path) -> None:
    fake.cancel_at = "qemu-img"
    with pytest.raises(Cancelled):
        _build(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cancel_between_steps_stops_the_build(fake: FakeTools, tmp_path: Path) -> None:
    cancel = CancelToken()

    def on_progress(progress: Progress) -> None:
        if progress.step == "extract kernel":
            cancel.cancel()

    with pytest.raises(Cancelled):
        _build(tmp_path, on_progress=on_progress, cancel=cancel)
    assert "mkfs.ext4" not in fake.names()
    assert list(tmp_path.iterdir()) == []


# -- the tool runner and tree removal the build relies on ----------------------------------


def test_run_tool_returns_stdout_and_reports_the_tail_of_failures() -> None:
    out = tools_module.run_tool(["sh", "-c", "echo out; echo err >&2"], cancel=CancelToken(),
                                capture_stdout=True)
    assert out == "out\n"
    script = "for i in $(seq 1 30); do echo line$i; done; echo fatal >&2; exit 3"
    with pytest.raises(ToolFailed) as info:
        tools_module.run_tool(["sh", "-c", script], cancel=CancelToken())
    message = info.value.message
    assert message.startswith("sh failed (exit code 3)")
    assert "fatal" in message and "line30" in message and "line1\n" not in message


def test_run_tool_stops_the_tool_when_cancelled(tmp_path: Path) -> None:
    import threading
    import time

    cancel = CancelToken()
    pid_file = tmp_path / "pid"
    threading.Timer(0.3, cancel.cancel).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        # The child of the shell must die too: the whole process group is stopped.
        tools_module.run_tool(["sh", "-c", f"sleep 30 & echo $! > {pid_file}; wait"], cancel=cancel)
    assert time.monotonic() - started < 5
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    state = Path(f"/proc/{child}/stat").read_text().split()[2] if Path(f"/proc/{child}").exists() else "gone"
    assert state in ("gone", "Z")


def test_remove_tree_removes_read_only_trees_and_keeps_symlink_targets(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "file").write_text("x")
    (tree / "sub" / "link").symlink_to(outside)
    (tree / "sub" / "file").chmod(0o444)
    (tree / "sub").chmod(0o555)
    tree.chmod(0o555)
    tools_module.remove_tree(tree)
    assert not tree.exists()
    assert (outside / "keep").read_text() == "keep"
    tools_module.remove_tree(tree)  # absent: nothing to do


def test_mount_points_are_read_with_escapes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    work = tmp_path / "my work"
    escaped = str(work).replace(" ", "\\040")
    lines = [
        "22 27 0:21 / /proc rw,relatime - proc proc rw",
        f"90 27 0:50 / {escaped}/root/proc rw - proc proc rw",
        f"91 27 0:51 / {escaped}/root/dev/null rw - devtmpfs udev rw",
        f"92 27 0:52 / {escaped}-other/proc rw - proc proc rw",
    ]
    original = Path.read_text

    def fake_read_text(self: Path, *args: object, **kwargs: object) -> str:
        if str(self) == "/proc/self/mountinfo":
            return "\n".join(lines) + "\n"
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", fake_read_text)
    assert tools_module.mounts_below(work) == [work / "root/dev/null", work / "root/proc"]
