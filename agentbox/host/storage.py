"""Removing a workspace's storage directory (disks, seed, console log, share mountpoints,
a copy share's staging folder a crash left), and emptying the folder its guest writes."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

COPY_STAGING_SUFFIX = ".staging"  # `.share-TAG.img.XXXX.staging`: agentbox's own copy, never a mount


def remove_storage(*, storage: Path, delete_volume: Callable[[Path], object]) -> None:
    """Disks through `delete_volume` (the backend's); directories only when empty (rmdir,
    never rmtree: a share mountpoint that is somehow still mounted holds the user's files)."""
    if not storage.is_dir():
        return
    for path in sorted(storage.iterdir()):
        if is_copy_staging(path):
            shutil.rmtree(path)  # a copy agentbox made, interrupted before it was removed
        elif path.is_dir() and not path.is_symlink():
            for inner in sorted(path.iterdir()):
                if inner.is_dir() and not inner.is_symlink():
                    inner.rmdir()
            path.rmdir()
        else:
            delete_volume(path)
    storage.rmdir()


def copy_disk(*, source: Path, target: Path) -> None:
    """A byte-for-byte copy of a disk image; `source` is only read. The target must not exist
    (O_EXCL) and is the owner's alone until the hypervisor takes it."""
    with source.open("rb") as src, os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600),
                                             "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 24)


def is_copy_staging(path: Path) -> bool:
    return (path.name.startswith(".share-") and path.name.endswith(COPY_STAGING_SUFFIX)
            and path.is_dir() and not path.is_symlink() and not os.path.ismount(path))


def remove_untrusted_contents(root: Path) -> int:
    """Empty a folder the guest wrote (the outbox) without following anything it put there;
    returns how many files and links went. Each name is removed relative to its parent's
    descriptor: the guest may swap a folder for a link to a host folder at any moment, and a
    path-based walk would then delete the host folder's files."""
    try:
        fd = os.open(root, _DIR_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    except OSError as error:
        if error.errno == errno.ELOOP:  # a link, not the folder itself: nothing of ours
            return 0
        raise
    try:
        return _empty(fd)
    finally:
        os.close(fd)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _empty(fd: int) -> int:
    count = 0
    for name in os.listdir(fd):
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(info.st_mode):
            try:
                sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as error:
                if error.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
            else:
                try:
                    count += _empty(sub)
                finally:
                    os.close(sub)
                try:
                    os.rmdir(name, dir_fd=fd)
                    continue
                except NotADirectoryError:  # swapped for a link meanwhile: the link goes below
                    pass
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=fd)
            count += 1
    return count
