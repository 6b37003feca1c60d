"""Removing a workspace's storage directory (disks, seed, console log, share mountpoints)."""

from __future__ import annotations

import os
from pathlib import Path

from agentbox.services.context import ServiceContext


def remove_storage(*, ctx: ServiceContext, storage: Path) -> None:
    """Disks through the backend; directories only when empty (rmdir, never rmtree: a
    share mountpoint that is somehow still mounted holds the user's own files)."""
    if not storage.is_dir():
        return
    for path in sorted(storage.iterdir()):
        if path.is_dir() and not path.is_symlink():
            for inner in sorted(path.iterdir()):
                if inner.is_dir() and not inner.is_symlink():
                    inner.rmdir()
            path.rmdir()
        else:
            ctx.backend.delete_volume(path=path)
    storage.rmdir()


def remove_untrusted_contents(root: Path) -> int:
    """Empty a folder the guest wrote (the outbox) without following anything it put there;
    returns how many files and links went."""
    count = 0
    if not root.is_dir() or root.is_symlink():
        return count
    for dirpath, dirnames, filenames in os.walk(root, topdown=False, followlinks=False):
        for entry in filenames:
            os.unlink(os.path.join(dirpath, entry))
            count += 1
        for entry in dirnames:
            full = os.path.join(dirpath, entry)
            if os.path.islink(full):  # os.walk lists a link to a folder among the folders
                os.unlink(full)
                count += 1
            else:
                os.rmdir(full)
    return count
