"""The outbox: the one folder the guest may write, where an agent leaves its results.

Its contents are untrusted (the guest wrote them, as root if it liked): listing and export
never follow a symlink, never read a device, a FIFO or a socket, and stop at a size limit.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from agentbox.errors import InvalidInput
from agentbox.host.locks import workspace_lock
from agentbox.host.storage import remove_untrusted_contents
from agentbox.services.context import ServiceContext
from agentbox.services.lookup import load_ready_record
from agentbox.services.outbox_limit import OutboxLimit, OutboxUsage
from agentbox.services.shares import ShareService

DEFAULT_EXPORT_LIMIT = 1 << 30  # 1 GiB


@dataclass(frozen=True)
class OutboxEntry:
    path: str  # relative to the outbox
    kind: str  # file | dir | symlink | other
    size: int
    modified: float  # seconds since the epoch


@dataclass(frozen=True)
class ExportResult:
    copied: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]  # (path, why)
    bytes: int


class OutboxService:
    def __init__(self, *, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def directory(self, *, name: str) -> Path:
        """The outbox folder on the host, its filesystem mounted (again, after a host restart)."""
        record = load_ready_record(ctx=self._ctx, name=name)
        OutboxLimit(ctx=self._ctx).ensure_mounted(record=record)
        return ShareService(ctx=self._ctx).outbox_dir(record)

    def usage(self, *, name: str) -> OutboxUsage:
        """How much of its size limit the outbox uses (or why no limit holds it)."""
        return OutboxLimit(ctx=self._ctx).usage(record=load_ready_record(ctx=self._ctx, name=name))

    def set_limit(self, *, name: str, limit_mib: int) -> OutboxUsage:
        """Resize the outbox to hold `limit_mib` MiB, while the workspace is stopped: its
        filesystem is resized offline, and a running VM's QEMU holds it (libvirt starts QEMU
        in a mount namespace of its own, with a copy of the host's mounts)."""
        ctx = self._ctx
        with workspace_lock(paths=ctx.paths, name=name):
            record = load_ready_record(ctx=ctx, name=name)
            limits = OutboxLimit(ctx=ctx)
            limits.check_new_limit(record=record, limit_mib=limit_mib)
            if ShareService(ctx=ctx).is_running(record):
                raise InvalidInput(f"{name} is running: its outbox can be resized only while it is stopped",
                                   hint=f"agentbox stop {name}, then set the limit; a reset or start brings "
                                        "it back with the new size")
            record = replace(record, outbox_limit_mib=limit_mib)
            ctx.records.save(record=record)  # an outbox from before limits gets this size at its next start
            if record.storage.outbox_image.exists():
                limits.resize(record=record, limit_mib=limit_mib)
            ctx.audit(name=name).append(event="outbox.limit_set", details={"limit_mib": limit_mib})
            return limits.usage(record=record)

    def list(self, *, name: str) -> tuple[OutboxEntry, ...]:
        root = self.directory(name=name)
        return tuple(OutboxEntry(path=path, kind=_kind(info), size=info.st_size, modified=info.st_mtime)
                     for path, info in _walk(root))

    def export(self, *, name: str, dest: Path, limit_bytes: int = DEFAULT_EXPORT_LIMIT) -> ExportResult:
        root = self.directory(name=name)
        dest = dest.expanduser()
        if dest.exists() and not dest.is_dir():
            raise InvalidInput(f"{dest} exists and is not a folder", hint="export into a new or empty folder")
        total = sum(info.st_size for _, info in _walk(root) if stat.S_ISREG(info.st_mode))
        if total > limit_bytes:
            raise InvalidInput(f"the outbox holds {total / 2**20:.1f} MiB of files, over the "
                               f"{limit_bytes / 2**20:.0f} MiB export limit",
                               hint="raise it with --max-mib, or export less (clear what you do not need)")
        dest.mkdir(parents=True, exist_ok=True)
        export = _Export(limit=limit_bytes)
        if root.is_dir():
            # The folder the user named may be a link of theirs; everything below it is opened
            # without following links, since the guest chose those names.
            with _fd(os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)) as dst, \
                    _fd(_open_dir(root)) as src:
                export.copy_dir(src=src, dst=dst, prefix="")
        self._ctx.audit(name=name).append(event="outbox.exported", details={
            "dest": str(dest), "files": len(export.copied), "bytes": export.written,
            "skipped": len(export.skipped)})
        return ExportResult(copied=tuple(export.copied), skipped=tuple(export.skipped), bytes=export.written)

    def clear(self, *, name: str) -> int:
        count = remove_untrusted_contents(self.directory(name=name))
        self._ctx.audit(name=name).append(event="outbox.cleared", details={"files": count})
        return count


# The guest can rename, replace or relink anything in the outbox at any moment, also while
# the host walks it. So every name is opened relative to its parent's descriptor, with
# O_NOFOLLOW: a folder swapped for a link after it was listed is refused (ELOOP), never
# followed into a host folder; a folder already opened stays the one that was checked.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
MAX_DEPTH = 100  # folders in folders: deeper ones are not walked (each level holds descriptors)


@contextmanager
def _fd(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def _open_dir(name: str | Path, *, dir_fd: int | None = None) -> int:
    return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _kind(info: os.stat_result) -> str:
    mode = info.st_mode
    return ("symlink" if stat.S_ISLNK(mode) else "dir" if stat.S_ISDIR(mode)
            else "file" if stat.S_ISREG(mode) else "other")


def _children(fd: int) -> Iterator[tuple[str, os.stat_result]]:
    for child in sorted(os.listdir(fd)):
        try:
            yield child, os.stat(child, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:  # gone since it was listed
            continue


def _walk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(path relative to root, lstat) of everything below root, parents before children."""
    try:
        top = _open_dir(root)
    except (FileNotFoundError, NotADirectoryError):
        return
    with _fd(top):
        yield from _walk_fd(top, prefix="", depth=1)


def _walk_fd(fd: int, *, prefix: str, depth: int) -> Iterator[tuple[str, os.stat_result]]:
    for child, info in _children(fd):
        yield prefix + child, info
        if stat.S_ISDIR(info.st_mode) and depth < MAX_DEPTH:
            try:
                sub = _open_dir(child, dir_fd=fd)
            except OSError as error:
                if error.errno in _CHANGED:
                    continue
                raise
            with _fd(sub):
                yield from _walk_fd(sub, prefix=f"{prefix}{child}/", depth=depth + 1)


_CHANGED = {errno.ENOENT, errno.ELOOP, errno.ENOTDIR}  # replaced or removed by the guest meanwhile


@dataclass
class _Export:
    limit: int
    copied: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    written: int = 0

    def copy_dir(self, *, src: int, dst: int, prefix: str, depth: int = 1) -> None:
        for child, info in _children(src):
            path = prefix + child
            kind = _kind(info)
            if kind == "dir" and depth >= MAX_DEPTH:
                self.skipped.append((path, f"nested deeper than {MAX_DEPTH} folders"))
            elif kind == "dir":
                self._descend(src=src, dst=dst, child=child, path=path, depth=depth)
            elif kind == "file":
                self._copy_file(src=src, dst=dst, child=child, path=path, listed=info)
            else:
                self.skipped.append((path, f"{kind}: only regular files are exported"))

    def _descend(self, *, src: int, dst: int, child: str, path: str, depth: int) -> None:
        try:
            sub_src = _open_dir(child, dir_fd=src)
        except OSError as error:
            if error.errno not in _CHANGED:
                raise
            self.skipped.append((path, "changed during the export (a folder no longer)"))
            return
        with _fd(sub_src):
            with contextlib.suppress(FileExistsError):
                os.mkdir(child, dir_fd=dst)
            try:
                sub_dst = _open_dir(child, dir_fd=dst)
            except OSError as error:
                if error.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                self.skipped.append((path, "the destination has something else than a folder there"))
                return
            with _fd(sub_dst):
                self.copy_dir(src=sub_src, dst=sub_dst, prefix=f"{path}/", depth=depth + 1)

    def _copy_file(self, *, src: int, dst: int, child: str, path: str, listed: os.stat_result) -> None:
        try:
            source = os.open(child, _FILE_FLAGS, dir_fd=src)
        except OSError as error:
            if error.errno not in _CHANGED | {errno.ENXIO}:  # ENXIO: a socket took its place
                raise
            self.skipped.append((path, "changed during the export (a regular file no longer)"))
            return
        with _fd(source):
            info = os.fstat(source)
            if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) != (listed.st_dev, listed.st_ino):
                self.skipped.append((path, "changed during the export (a regular file no longer)"))
                return
            try:
                # O_EXCL + O_NOFOLLOW: never write through a link, nor over a file, already there.
                target = os.open(child, _NEW_FILE_FLAGS, 0o666, dir_fd=dst)
            except FileExistsError:
                self.skipped.append((path, "already in the destination, not overwritten"))
                return
            with _fd(target):
                self._pump(source=source, target=target, path=path)
        self.copied.append(path)

    def _pump(self, *, source: int, target: int, path: str) -> None:
        while chunk := os.read(source, _CHUNK):
            self.written += len(chunk)
            if self.written > self.limit:  # the guest may grow files while they are copied
                raise InvalidInput(f"{path} grew during the export, past the "
                                   f"{self.limit / 2**20:.0f} MiB export limit",
                                   hint="export again when the agent has finished writing")
            view = memoryview(chunk)
            while view:
                view = view[os.write(target, view):]
