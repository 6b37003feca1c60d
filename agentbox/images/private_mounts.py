"""Run a build step in a mount namespace of its own, so its mounts are seen by nobody else.

A layer build keeps the image's file system mounted for minutes (apt, npm, pip). Under
qemu:///system, libvirt starts every QEMU in a new mount namespace copied from the host's:
a VM started meanwhile got a copy of that mount, our `umount` then only detached our view,
the file system stayed alive in QEMU's namespace with its last writes unflushed, and the
raw copy read back without the packages (seen here: every package "missing"). Mounted in a
namespace of the build's own, the mount is never in the host's, so never copied; and when
that namespace ends, whatever is still mounted in it goes with it.

The namespace belongs to one thread (mount namespaces are per task): the step runs on a
thread of its own, which unshares first; the tools it starts inherit the namespace.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from agentbox.errors import ImageError
from agentbox.images.tools import find_tool, run_tool
from agentbox.model.progress import CancelToken

T = TypeVar("T")
_CLONE_NEWNS = 0x00020000


def in_private_mount_namespace(step: Callable[[], T], *, cancel: CancelToken) -> T:
    """`step()` on a thread in a new mount namespace (no propagation to or from the host's);
    its result or its exception. Ctrl-C while waiting cancels `cancel` and waits for it."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            _unshare_mounts()
            outcome.append(step())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            failure.append(exc)

    worker = threading.Thread(target=body, name="agentbox-layer-build", daemon=True)
    worker.start()
    while True:
        try:
            worker.join()
            break
        except KeyboardInterrupt:
            cancel.cancel()  # the step stops at its next check and cleans up; then this re-raises
            worker.join()
            raise
    if failure:
        raise failure[0]
    return outcome[0]


def _unshare_mounts() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNS) != 0:
        errno = ctypes.get_errno()
        raise ImageError(f"cannot make a mount namespace for the build: {os.strerror(errno)}",
                         hint="building a layer needs root (CAP_SYS_ADMIN)")
    # Private all the way down: our mounts never reach the host, the host's never ours.
    run_tool([find_tool("mount", package="mount"), "--make-rprivate", "/"], cancel=CancelToken())
