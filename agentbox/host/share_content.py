"""What a shared folder holds, seen from the guest's user: which entries it cannot read (a
live share), and the copy a copy-disk share is built from, with every entry readable.

Both walk the folder without following symlinks (a link is shared as a link, never as what
it points at) and never open anything but regular files and folders: a FIFO in the folder
must not hang the walk.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agentbox.model.shares import SPECIAL, NotReadable, NotReadableTally, guest_may_read, is_special

_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


@dataclass(frozen=True)
class _Entry:
    relative: str  # path inside the shared folder
    absolute: str
    st: os.stat_result


def scan_live(*, source: Path, mapped: bool, guest_uid: int, guest_gid: int) -> NotReadable:
    """What the guest's user will fail to read in a live share of `source`. With `mapped`
    (bindfs shows every entry readable) that is only what this process cannot read itself;
    without, also what the host's owner and mode deny to the guest's uid."""
    tally = NotReadableTally()
    top = _Entry(relative=".", absolute=str(source), st=source.stat())  # the folder itself counts too
    for entry in (top, *_walk(source, tally)):
        mode = entry.st.st_mode
        if is_special(mode):
            tally.add(path=entry.relative, why=SPECIAL)
        elif stat.S_ISREG(mode) and (why := _unopenable(entry.absolute)):
            tally.add(path=entry.relative, why=why)
        elif not mapped and not guest_may_read(mode=mode, uid=entry.st.st_uid, gid=entry.st.st_gid,
                                               guest_uid=guest_uid, guest_gid=guest_gid):
            tally.add(path=entry.relative, why=f"owner {entry.st.st_uid}, mode {stat.S_IMODE(mode):04o}")
    return tally.result()


def stage_copy(*, source: Path, staging: Path, owner: tuple[int, int] | None,
               exclude: frozenset[str] = frozenset()) -> NotReadable:
    """Copy `source` into the empty folder `staging`: folders 0755, files 0644 (0755 if the
    host's file is executable), owned by `owner` where this process may chown (root), symlinks
    as symlinks, modification times kept. Left out, and reported: sockets, FIFOs, devices and
    whatever this process cannot read. Not copied, and not reported: the files in `exclude`
    (paths inside `source`, '/'-separated: the secrets the user chose to keep out)."""
    tally = NotReadableTally()
    folders: list[tuple[str, os.stat_result]] = [(str(staging), source.stat())]
    for entry in _walk(source, tally):
        if entry.relative.replace(os.sep, "/") in exclude:
            continue
        target = os.path.join(staging, entry.relative)
        mode = entry.st.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(target, 0o755)
            folders.append((target, entry.st))
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(entry.absolute), target)
        elif stat.S_ISREG(mode):
            why = _copy_file(entry.absolute, target, executable=bool(mode & 0o111))
            if why:
                tally.add(path=entry.relative, why=why)
                continue
            os.utime(target, ns=(entry.st.st_atime_ns, entry.st.st_mtime_ns))
        else:
            tally.add(path=entry.relative, why=SPECIAL)
            continue
        if owner:
            os.lchown(target, *owner)
    os.chmod(staging, 0o755)
    if owner:
        os.chown(staging, *owner)
    for path, st in reversed(folders):  # after their contents, which touched them
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    return tally.result()


def _walk(root: Path, tally: NotReadableTally) -> Iterator[_Entry]:
    """Every entry below `root`, parents before children; a folder that cannot be listed is
    reported (its contents are then unknown) and not entered."""
    stack = [""]
    while stack:
        relative = stack.pop()
        folder = os.path.join(root, relative)
        try:
            with os.scandir(folder) as listing:
                entries = sorted((e.name, st) for e in listing if (st := _lstat(e)) is not None)
        except OSError as exc:
            tally.add(path=relative or ".", why=f"cannot be listed on the host ({exc.strerror})")
            continue
        for name, st in entries:
            child = os.path.join(relative, name)
            yield _Entry(relative=child, absolute=os.path.join(root, child), st=st)
            if stat.S_ISDIR(st.st_mode):
                stack.append(child)


def _lstat(entry: os.DirEntry[str]) -> os.stat_result | None:
    try:
        return entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None  # gone since the listing: nothing to share


def _unopenable(path: str) -> str:
    try:
        os.close(os.open(path, _OPEN_FILE))
    except OSError as exc:
        return f"unreadable on the host ({exc.strerror})"
    return ""


def _copy_file(path: str, target: str, *, executable: bool) -> str:
    """Copy one regular file; returns why it could not be read ("" when copied)."""
    try:
        src = os.open(path, _OPEN_FILE)
    except OSError as exc:
        return f"unreadable on the host ({exc.strerror})"
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o755 if executable else 0o644)
        try:
            while chunk := _read(src):
                view = memoryview(chunk)
                while view:  # a write error (a full disk) is ours, not the file's: it propagates
                    view = view[os.write(dst, view):]
        finally:
            os.close(dst)
    except _ReadFailed as exc:
        os.unlink(target)
        return f"unreadable on the host ({exc.args[0]})"
    finally:
        os.close(src)
    os.chmod(target, 0o755 if executable else 0o644)  # the umask does not decide
    return ""


class _ReadFailed(Exception):
    pass


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 20)
    except OSError as exc:
        raise _ReadFailed(exc.strerror) from None
