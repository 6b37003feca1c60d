"""The outbox's fixed-size filesystem: an ext4 image the host formats and loop-mounts at the
outbox folder. The guest writes only through virtiofsd into that mount, never to the image's
blocks (the image is attached to nothing, 0600 root, so QEMU cannot open it): whatever it
does, as root or not, it cannot store more than the filesystem holds, and gets ENOSPC.

The image is sparse and mounted with `discard`, so it costs the host only what the guest
keeps there. Mounted nodev,nosuid,noexec: the host never runs or opens as a device what the
guest left. Resizing is offline (unmount, e2fsck, resize2fs), with the VM stopped: online
resizing needs CAP_SYS_RESOURCE, which a container often lacks, and a running VM's QEMU holds
a copy of the mount in its own mount namespace.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agentbox.errors import PermissionDenied, ToolFailed
from agentbox.host.bind_mounts import is_mounted, mount_source, run_tool
from agentbox.host.storage import remove_untrusted_contents

MIN_BYTES = 16 << 20
_MIB = 1 << 20
_TOOLS = ("mkfs.ext4", "e2fsck", "resize2fs", "mount", "umount")
_OPTIONS = "loop,nodev,nosuid,noexec,discard"
LOOP_CONTROL = Path("/dev/loop-control")  # what `mount -o loop` asks for a free loop device
_BUSY_TRIES = 50  # 0.2 s apart
_RELEASE_TRIES = 150  # 0.2 s apart: an unplug under TCG can take seconds
_FIT_ROUNDS = 4  # ext4's overhead changes a little with its size: a few rounds reach the target


@dataclass(frozen=True)
class DiskUsage:
    used: int  # bytes in use (files, folders, their metadata)
    capacity: int  # bytes the guest can store in all: used + still available


def unavailable_reason() -> str:
    """Why this host cannot give an outbox a size limit ("" when it can)."""
    if os.geteuid() != 0:
        return "a size-limited outbox is a loop-mounted filesystem, which needs root"
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (e2fsprogs, mount)"
    if not LOOP_CONTROL.exists():
        return f"no loop devices ({LOOP_CONTROL} is missing: the loop kernel module, or a container without it)"
    return ""


def create(*, image: Path, mountpoint: Path, capacity: int, owner: int, populate_from: Path | None = None) -> None:
    """Format an image the guest can store `capacity` bytes in, holding a copy of
    `populate_from` (the folder of an outbox from before limits) if given, and mount it.
    The image appears whole or not at all (formatted aside, then renamed)."""
    image.parent.mkdir(parents=True, exist_ok=True)
    with _locked(image):
        staging = image.with_name(image.name + ".new")
        _sparse_file(staging, capacity + capacity // 16 + 8 * _MIB)  # a first guess at ext4's overhead
        # -m 0: no blocks kept for root (the guest's root must not get more than its agent);
        # 4 KiB blocks and the usual layout at every size: a small one's 1 KiB blocks would
        # keep resize2fs from ever shrinking it close to what it holds. A 4 MiB journal (the
        # least ext4 takes) instead of 32 MiB at 1 GiB: files are written a few at a time, and
        # the sparse image then holds about 5 MiB, not 33 MiB, until something is written.
        argv = ["mkfs.ext4", "-q", "-F", "-m", "0", "-b", "4096", "-T", "default", "-J", "size=4",
                "-L", "agentbox-outbox",
                "-E", f"root_owner={owner}:{owner}"]
        try:
            run_tool([*argv, *(["-d", str(populate_from)] if populate_from else []), str(staging)])
        except BaseException:
            staging.unlink(missing_ok=True)
            raise
        os.replace(staging, image)
        if populate_from is not None:
            remove_untrusted_contents(populate_from)  # copied into the image: the host's copy goes
        _mount(image, mountpoint)
        _drop_lost_found(mountpoint)
        _fit(image, mountpoint, capacity)


def mount(*, image: Path, mountpoint: Path) -> None:
    """Mount the image at `mountpoint` unless it already is (after a host restart it is not)."""
    with _locked(image):
        _mount(image, mountpoint)


def is_mounted_image(*, image: Path, mountpoint: Path) -> bool:
    """Whether `mountpoint` shows this image (a loop device backed by it), nothing else."""
    source = mount_source(mountpoint.resolve())
    if not source.startswith("/dev/loop"):
        return False
    backing = Path("/sys/block") / source.removeprefix("/dev/") / "loop" / "backing_file"
    try:
        return backing.read_text().strip() == str(image.resolve())
    except OSError:
        return False


def usage(*, mountpoint: Path) -> DiskUsage:
    info = os.statvfs(mountpoint)
    used = (info.f_blocks - info.f_bfree) * info.f_frsize
    return DiskUsage(used=used, capacity=used + info.f_bavail * info.f_frsize)


def resize(*, image: Path, mountpoint: Path, capacity: int) -> None:
    """Make the image hold `capacity` bytes. Offline, with the workspace's VM stopped (this
    waits until nothing else holds the image). Refused by resize2fs, and left as it was, when
    the files there do not fit."""
    with _locked(image):
        _fit(image, mountpoint, capacity)


def remove(*, image: Path, mountpoint: Path) -> None:
    """Unmount and delete the image; the mountpoint goes too (with whatever an outbox from
    before limits left in it, removed without following the guest's links)."""
    with _locked(image):
        if is_mounted(mountpoint.resolve()):
            run_tool(["umount", "--lazy", "--", str(mountpoint.resolve())])
        if mountpoint.is_dir() and not mountpoint.is_symlink():
            remove_untrusted_contents(mountpoint)
            mountpoint.rmdir()
        image.unlink(missing_ok=True)
        image.with_name(image.name + ".new").unlink(missing_ok=True)
    image.with_name(image.name + ".lock").unlink(missing_ok=True)


def _mount(image: Path, mountpoint: Path) -> None:
    mountpoint.mkdir(mode=0o770, exist_ok=True)
    point = mountpoint.resolve()
    if is_mounted(point):
        if not is_mounted_image(image=image, mountpoint=point):
            raise PermissionDenied(f"{point} has something else mounted on it than the outbox image {image}",
                                   hint=f"unmount it (umount {point}); agentbox mounts the outbox itself")
        return
    run_tool(["mount", "-t", "ext4", "-o", _OPTIONS, "--", str(image), str(point)])


def _fit(image: Path, mountpoint: Path, capacity: int) -> None:
    """Resize until the guest can store `capacity` bytes, give or take less than a MiB more."""
    for _ in range(_FIT_ROUNDS):
        step = _round_mib(capacity - usage(mountpoint=mountpoint).capacity)  # short: up; over: down, to 1 MiB
        if step == 0:
            return
        _resize_to(image, mountpoint, os.stat(image).st_size + step)


def _resize_to(image: Path, mountpoint: Path, size: int) -> None:
    point = mountpoint.resolve()
    _unmount_when_free(point)
    try:
        _wait_released(image)
        _fsck(image)  # resize2fs works only on a freshly checked filesystem
        run_tool(["resize2fs", str(image), f"{size // 1024}K"])
        if os.stat(image).st_size > size:
            os.truncate(image, size)  # resize2fs shrinks the filesystem, not the file
    finally:
        _mount(image, mountpoint)
        _drop_lost_found(mountpoint)


def _unmount_when_free(point: Path) -> None:
    # A virtiofsd just unplugged from the guest may hold the mount for a moment more.
    for _ in range(_BUSY_TRIES):
        try:
            run_tool(["umount", "--", str(point)])
            return
        except ToolFailed as error:
            if "busy" not in error.message:
                raise
            time.sleep(0.2)
    run_tool(["umount", "--", str(point)])


def _wait_released(image: Path) -> None:
    """Until no loop device is backed by the image. QEMU (in the mount namespace libvirt makes
    for it) and virtiofsd (in its sandbox) hold copies of the mount until they exit: checking
    or resizing the image under a live filesystem would corrupt it."""
    for _ in range(_RELEASE_TRIES):
        if not _loop_devices(image):
            return
        time.sleep(0.2)
    raise ToolFailed(f"the outbox image {image} is still in use ({', '.join(_loop_devices(image))}): "
                     "not resizing it", hint="the workspace's QEMU or virtiofsd may still run: stop it and try again")


def _loop_devices(image: Path) -> list[str]:
    wanted = str(image.resolve())
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            if backing.read_text().strip() == wanted:
                found.append("/dev/" + backing.parent.parent.name)
        except OSError:
            continue  # detached meanwhile
    return found


def _drop_lost_found(mountpoint: Path) -> None:
    # mkfs and e2fsck make an empty lost+found; in the outbox it would only puzzle the user
    # and the agent. One that holds what e2fsck recovered stays.
    with contextlib.suppress(OSError):
        (mountpoint / "lost+found").rmdir()


def _fsck(image: Path) -> None:
    argv = ["e2fsck", "-f", "-y", str(image)]
    try:
        subprocess.run(argv, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        if exc.returncode != 1:  # 1: errors found and corrected, which is fine
            detail = (exc.stderr or exc.stdout or "").strip()[-300:] or f"exit status {exc.returncode}"
            raise ToolFailed(f"`{' '.join(argv)}` failed: {detail}") from None


def _sparse_file(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, _round_mib(size))
    finally:
        os.close(fd)


def _round_mib(size: int) -> int:
    return (size + _MIB - 1) // _MIB * _MIB if size > 0 else -((-size) // _MIB * _MIB)


@contextmanager
def _locked(image: Path) -> Iterator[None]:
    """One process at a time formats, mounts or resizes an image (a listing may mount it
    while a start does): two loop mounts of one image would corrupt it."""
    fd = os.open(image.with_name(image.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
