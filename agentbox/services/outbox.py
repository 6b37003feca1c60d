"""The outbox: the one folder the guest may write, where an agent leaves its results.

Its contents are untrusted (the guest wrote them, as root if it liked): listing and export
never follow a symlink, never read a device, a FIFO or a socket, and stop at a size limit.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from agentbox.errors import InvalidInput
from agentbox.services.context import ServiceContext
from agentbox.services.lookup import load_ready_record
from agentbox.services.shares import ShareService
from agentbox.services.storage import remove_untrusted_contents

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
        return ShareService(ctx=self._ctx).outbox_dir(load_ready_record(ctx=self._ctx, name=name))

    def list(self, *, name: str) -> tuple[OutboxEntry, ...]:
        root = self.directory(name=name)
        return tuple(_entry(root, path) for path in _walk(root))

    def export(self, *, name: str, dest: Path, limit_bytes: int = DEFAULT_EXPORT_LIMIT) -> ExportResult:
        root = self.directory(name=name)
        dest = dest.expanduser()
        if dest.exists() and not dest.is_dir():
            raise InvalidInput(f"{dest} exists and is not a folder", hint="export into a new or empty folder")
        entries = [_entry(root, path) for path in _walk(root)]
        total = sum(e.size for e in entries if e.kind == "file")
        if total > limit_bytes:
            raise InvalidInput(f"the outbox holds {total / 2**20:.1f} MiB of files, over the "
                               f"{limit_bytes / 2**20:.0f} MiB export limit",
                               hint="raise it with --max-mib, or export less (clear what you do not need)")
        copied, skipped, written = [], [], 0
        for entry in entries:
            target = dest / entry.path
            if entry.kind == "dir":
                target.mkdir(parents=True, exist_ok=True)
                continue
            if entry.kind != "file":
                skipped.append((entry.path, f"{entry.kind}: only regular files are exported"))
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            written += _copy_regular(root / entry.path, target)
            copied.append(entry.path)
        self._ctx.audit(name=name).append(event="outbox.exported", details={
            "dest": str(dest), "files": len(copied), "bytes": written, "skipped": len(skipped)})
        return ExportResult(copied=tuple(copied), skipped=tuple(skipped), bytes=written)

    def clear(self, *, name: str) -> int:
        count = remove_untrusted_contents(self.directory(name=name))
        self._ctx.audit(name=name).append(event="outbox.cleared", details={"files": count})
        return count


def _walk(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        found += [base / d for d in sorted(dirnames)] + [base / f for f in sorted(filenames)]
    return sorted(found)


def _entry(root: Path, path: Path) -> OutboxEntry:
    info = os.lstat(path)
    kind = ("symlink" if stat.S_ISLNK(info.st_mode) else "dir" if stat.S_ISDIR(info.st_mode)
            else "file" if stat.S_ISREG(info.st_mode) else "other")
    return OutboxEntry(path=str(path.relative_to(root)), kind=kind, size=info.st_size, modified=info.st_mtime)


def _copy_regular(source: Path, target: Path) -> int:
    # O_NOFOLLOW: the guest may have swapped the file for a symlink since it was listed.
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as src:
        if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
            raise InvalidInput(f"{source} stopped being a regular file during the export")
        with open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
            return dst.tell()
