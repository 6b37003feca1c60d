"""Owner-only Unix sockets: the proxy and control endpoints must be reachable by the user
who runs agentbox and nobody else on the host."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from agentbox.errors import EgressError

_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes with the terminating NUL


@dataclass(frozen=True)
class BoundSocket:
    sock: socket.socket
    path: Path
    identity: tuple[int, int]  # (st_dev, st_ino) of the socket file we created

    def remove(self) -> None:
        """Unlink the socket file if it is still ours (not one a successor bound since)."""
        with contextlib.suppress(OSError):
            info = os.lstat(self.path)
            if (info.st_dev, info.st_ino) == self.identity:
                os.unlink(self.path)


def bind_unix_socket(*, path: Path) -> BoundSocket:
    """Bind a listening-ready Unix socket at `path`, mode 0600 from its first moment.

    A stale socket file (nothing listening) is replaced; a live one or any other file is an
    error, so two proxies never share a path and nothing else is deleted by mistake."""
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise EgressError(f"socket path too long ({len(os.fsencode(path))} bytes): {path}",
                          hint=f"Unix socket paths are limited to {_SUN_PATH_MAX} bytes; use a shorter directory")
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # no window in which the file is group/other accessible
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise EgressError(f"cannot create socket {path}: {exc.strerror or exc}") from exc
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.setblocking(False)
    info = os.lstat(path)
    return BoundSocket(sock=sock, path=path, identity=(info.st_dev, info.st_ino))


def _clear_stale(path: Path) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise EgressError(f"{path} exists and is not a socket", hint="remove it or choose another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        os.unlink(path)  # nobody listens: left over from a process that died
        return
    finally:
        probe.close()
    raise EgressError(f"{path} is in use by another running process",
                      hint="stop the other egress proxy first")
