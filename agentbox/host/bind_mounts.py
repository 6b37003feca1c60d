"""Host-side work for shares: what this host can enforce, read-only bind mounts, copy
disks, and the bind mounts a crash left behind.

A bind mount is made read-only in two steps (the kernel ignores `ro` on the first); the
result is checked in /proc/self/mountinfo and refused unless it really is read-only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from agentbox.errors import PermissionDenied, ToolFailed
from agentbox.model.shares import HostFacts

VIRTIOFSD_CANDIDATES = ("/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd", "/usr/local/libexec/virtiofsd")
_MOUNTINFO = Path("/proc/self/mountinfo")


def find_virtiofsd() -> str:
    return next((c for c in VIRTIOFSD_CANDIDATES if os.access(c, os.X_OK)), shutil.which("virtiofsd") or "")


def probe_facts(*, libvirt_version: int, local: bool, guest_9p: bool) -> HostFacts:
    virtiofsd = find_virtiofsd()
    return HostFacts(libvirt_version=libvirt_version, virtiofsd=virtiofsd,
                     virtiofsd_readonly=bool(virtiofsd) and _has_readonly_option(virtiofsd),
                     privileged=os.geteuid() == 0, local=local, guest_9p=guest_9p,
                     mkfs_ext4=shutil.which("mkfs.ext4") is not None)


def _has_readonly_option(virtiofsd: str) -> bool:
    try:
        done = subprocess.run([virtiofsd, "--help"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--readonly" in done.stdout + done.stderr


def mount_readonly_bind(*, source: Path, mountpoint: Path) -> None:
    """`mountpoint` shows `source` read-only; refused (and undone) unless it really is."""
    mountpoint.mkdir(parents=True, exist_ok=True, mode=0o755)
    if is_mounted(mountpoint):
        if not is_readonly_mount(mountpoint):
            raise PermissionDenied(f"{mountpoint} is mounted writable: refusing to share it")
        return
    run_tool(["mount", "--bind", "--", str(source), str(mountpoint)])
    try:
        run_tool(["mount", "-o", "remount,bind,ro,nodev,nosuid", "--", str(mountpoint)])
        if not is_readonly_mount(mountpoint):
            raise PermissionDenied(f"the bind mount at {mountpoint} did not become read-only: not sharing it")
    except BaseException:
        unmount(mountpoint)
        raise


def unmount(mountpoint: Path) -> None:
    """Unmount (lazily, so a busy mount still goes) and remove the empty mountpoint."""
    if is_mounted(mountpoint):
        run_tool(["umount", "--lazy", "--", str(mountpoint)])
    try:
        mountpoint.rmdir()  # never rmtree: if anything is still mounted, it is the user's data
    except FileNotFoundError:
        pass


def leftover_mounts(*, under: Path, keep: Iterable[Path]) -> list[Path]:
    """Mounts below `under` (share mountpoints) that are not in `keep`."""
    root = str(under.resolve()) + "/"
    kept = {str(path) for path in keep}
    return [Path(point) for point in _mount_points() if point.startswith(root) and point not in kept]


def make_copy_disk(*, source: Path, image: Path, label: str) -> None:
    """A raw ext4 image holding a copy of `source` (symlinks stay symlinks), sized to fit."""
    used = sum(entry.stat(follow_symlinks=False).st_size for entry in _walk(source))
    size_mib = max(16, int(used * 1.3 / 2**20) + 16)
    image.parent.mkdir(parents=True, exist_ok=True)
    try:
        run_tool(["mkfs.ext4", "-q", "-F", "-L", label[:16], "-d", str(source), "-E", "root_owner=0:0",
              str(image), f"{size_mib}M"])
        os.chmod(image, 0o444)
    except BaseException:
        image.unlink(missing_ok=True)
        raise


def folder_bytes(root: Path) -> int:
    """What the regular files below `root` hold (links not followed)."""
    return sum(entry.stat(follow_symlinks=False).st_size for entry in _walk(root)
               if entry.is_file(follow_symlinks=False))


def is_mounted(path: Path) -> bool:
    return str(path) in _mount_points()


def is_readonly_mount(path: Path) -> bool:
    for fields in _mountinfo():
        if fields[4] == str(path):
            options = fields[5].split(",")  # per-mount options: this is what a write meets
            return "ro" in options
    return False


def mount_source(path: Path) -> str:
    """What is mounted on top at `path` (a device such as /dev/loop3), or ""."""
    sources = [fields[fields.index("-", 6) + 2] for fields in _mountinfo()
               if fields[4] == str(path) and "-" in fields[6:]]
    return sources[-1] if sources else ""  # the last one listed is the one on top


def _mount_points() -> list[str]:
    return [fields[4] for fields in _mountinfo()]


def _mountinfo() -> list[list[str]]:
    lines = _MOUNTINFO.read_text().splitlines()
    # Mount points with spaces are octal-escaped (\040); ours never have any.
    return [line.split() for line in lines if len(line.split()) > 5]


def _walk(root: Path) -> Iterable[os.DirEntry[str]]:
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                yield entry
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))


def run_tool(argv: Sequence[str]) -> None:
    try:
        subprocess.run(list(argv), check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise ToolFailed(f"{argv[0]} is not installed") from None
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip() or f"exit status {exc.returncode}"
        raise ToolFailed(f"`{' '.join(argv)}` failed: {detail}") from None
