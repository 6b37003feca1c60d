"""A JSONL log kept as rotated segments plus the active file it is appended to.

`ws.jsonl` is the active file; rotation moves it aside as `ws.jsonl.1`, `ws.jsonl.2`, ...
(higher is newer) and a new `ws.jsonl` takes over. Used by the audit log (hash-chained
across segments, see chain.py) and by the egress proxy's decision log (plain JSONL).
"""

from __future__ import annotations

import os
import re
from pathlib import Path


def segment_paths(path: Path) -> tuple[Path, ...]:
    """The rotated segments of the log at `path`, oldest first."""
    pattern = re.compile(re.escape(path.name) + r"\.([0-9]+)$")
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return ()
    numbered = [(int(m.group(1)), name) for name in names if (m := pattern.match(name))]
    return tuple(path.parent / name for _, name in sorted(numbered))


def log_files(path: Path) -> tuple[Path, ...]:
    """Every file of the log in order: its segments, then the active file (if there is one)."""
    return segment_paths(path) + ((path,) if path.exists() else ())


def next_segment(path: Path) -> Path:
    segments = segment_paths(path)
    number = int(segments[-1].name.rsplit(".", 1)[1]) + 1 if segments else 1
    return path.with_name(f"{path.name}.{number}")


def staging_path(path: Path) -> Path:
    """Where the audit appender builds the next active file before moving it in."""
    return path.with_name(f"{path.name}.next")


def rotate_by_rename(*, path: Path, keep: int) -> None:
    """Move the active file aside as the next segment and drop all but the newest `keep`.

    For a log with a single writer (the decision log): the next write creates a new file."""
    try:
        os.rename(path, next_segment(path))
    except FileNotFoundError:
        return
    segments = segment_paths(path)
    for old in segments[:max(len(segments) - keep, 0)]:
        old.unlink(missing_ok=True)


def remove_log(path: Path) -> None:
    """Delete the log with all its segments (`destroy --purge`)."""
    for file in (*segment_paths(path), staging_path(path), path):
        file.unlink(missing_ok=True)


def inode_of(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None
