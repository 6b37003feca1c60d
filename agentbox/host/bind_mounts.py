"""Host-side work for shares: what this host can enforce, read-only bind mounts, copy
disks, and the bind mounts a crash left behind.

A live share is a read-only view of the folder mounted where virtiofsd exports it. With
bindfs it is a FUSE view that shows every entry owned by the guest's user and readable
(the guest kernel checks the owner and mode virtiofsd reports, and the C virtiofsd has no
uid mapping); without, a plain bind mount, made read-only in two steps (the kernel ignores
`ro` on the first). Either way the result is checked in /proc/self/mountinfo and refused
unless it really is read-only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from agentbox.errors import PermissionDenied, ToolFailed
from agentbox.host.share_content import stage_copy
from agentbox.host.storage import COPY_STAGING_SUFFIX
from agentbox.model.shares import HostFacts, NotReadable

VIRTIOFSD_CANDIDATES = ("/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd", "/usr/local/libexec/virtiofsd")
_MOUNTINFO = Path("/proc/self/mountinfo")


def find_virtiofsd() -> str:
    return next((c for c in VIRTIOFSD_CANDIDATES if os.access(c, os.X_OK)), shutil.which("virtiofsd") or "")


def find_bindfs() -> str:
    return shutil.which("bindfs") or ""


def probe_facts(*, libvirt_version: int, local: bool, guest_9p: bool, virtiofs: bool = True) -> HostFacts:
    """`virtiofs`: whether the backend can serve virtiofs at all (its capability)."""
    virtiofsd = find_virtiofsd() if virtiofs else ""
    return HostFacts(libvirt_version=libvirt_version, virtiofsd=virtiofsd,
                     virtiofsd_readonly=bool(virtiofsd) and virtiofsd_has_readonly(virtiofsd),
                     privileged=os.geteuid() == 0, local=local, guest_9p=guest_9p,
                     mkfs_ext4=shutil.which("mkfs.ext4") is not None, bindfs=bool(find_bindfs()))


def virtiofsd_has_readonly(virtiofsd: str) -> bool:
    try:
        done = subprocess.run([virtiofsd, "--help"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--readonly" in done.stdout + done.stderr


def mount_readonly_bind(*, source: Path, mountpoint: Path, readable_as: tuple[int, int] | None = None) -> bool:
    """`mountpoint` shows `source` read-only; refused (and undone) unless it really is.
    With `readable_as` (uid, gid) and bindfs installed, every entry shows owned by that user
    and readable (never writable); returns whether it does."""
    mountpoint.mkdir(parents=True, exist_ok=True, mode=0o755)
    bindfs = find_bindfs() if readable_as else ""
    if is_mounted(mountpoint):
        if not is_readonly_mount(mountpoint):
            raise PermissionDenied(f"{mountpoint} is mounted writable: refusing to share it")
        if _answers(mountpoint):
            return _fstype(mountpoint).startswith("fuse")
        unmount(mountpoint)  # a view whose bindfs died (a host crash): made anew below
        mountpoint.mkdir(parents=True, exist_ok=True, mode=0o755)
    if bindfs and readable_as:
        uid, gid = readable_as
        # The kernel enforces `ro` on the FUSE mount before bindfs sees a write; -r makes
        # bindfs refuse too. a+rX: files readable, folders enterable, executables runnable by all; a-w: honest modes.
        # No `--`: libfuse takes it for an option. Absolute paths never look like one.
        run_tool([bindfs, "-r", "-o", "ro,nodev,nosuid", f"--force-user={uid}", f"--force-group={gid}",
              "--perms=a+rX:a-w", str(source.absolute()), str(mountpoint.absolute())])
    else:
        run_tool(["mount", "--bind", "--", str(source), str(mountpoint)])
    try:
        if not bindfs:
            run_tool(["mount", "-o", "remount,bind,ro,nodev,nosuid", "--", str(mountpoint)])
        if not is_readonly_mount(mountpoint):
            raise PermissionDenied(f"the mount at {mountpoint} did not become read-only: not sharing it")
    except BaseException:
        unmount(mountpoint)
        raise
    return bool(bindfs)


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


def make_copy_disk(*, source: Path, image: Path, label: str, owner: tuple[int, int],
                   exclude: frozenset[str] = frozenset()) -> NotReadable:
    """A raw ext4 image holding a copy of `source` (symlinks stay symlinks), sized to fit,
    every entry readable by anyone and owned by `owner` (uid, gid) when this process is root;
    the files in `exclude` (paths inside `source`) are not in it at all.
    Returns what was left out: sockets, FIFOs, devices and what this process cannot read."""
    image.parent.mkdir(parents=True, exist_ok=True)
    chown = owner if os.geteuid() == 0 else None
    # A staging copy next to the image (removed whatever happens): mkfs.ext4 -d copies owners
    # and modes as they are and fails on the first unreadable file, so it gets a tree made
    # right. A crash leaves it in the workspace's storage dir, which destroy removes.
    staging = Path(tempfile.mkdtemp(prefix=f".{image.name}.", suffix=COPY_STAGING_SUFFIX, dir=image.parent))
    try:
        left_out = stage_copy(source=source, staging=staging, owner=chown, exclude=exclude)
        used = sum(entry.stat(follow_symlinks=False).st_size for entry in _walk(staging))
        size_mib = max(16, int(used * 1.3 / 2**20) + 16)
        root_owner = "{}:{}".format(*(chown or (os.geteuid(), os.getegid())))
        run_tool(["mkfs.ext4", "-q", "-F", "-L", label[:16], "-d", str(staging), "-E", f"root_owner={root_owner}",
              str(image), f"{size_mib}M"])
        os.chmod(image, 0o444)
    except BaseException:
        image.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return left_out


def _answers(mountpoint: Path) -> bool:
    try:
        os.stat(mountpoint)
    except OSError:  # ENOTCONN: the FUSE daemon behind it is gone
        return False
    return True


def _fstype(path: Path) -> str:
    for fields in _mountinfo():
        if fields[4] == str(path) and "-" in fields[6:]:
            return fields[fields.index("-", 6) + 1]
    return ""


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
