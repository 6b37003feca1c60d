"""Look through a folder for likely secrets before it is shared (rules in model/secret_rules.py).

Symlinks are never followed (a share shows a link as a link), only regular files are opened
(without blocking: a FIFO must not hang the scan), and only their first MAX_READ bytes are
read. Inside `.git` only `config` is read: the objects are compressed, and what matters there
is a token in a remote's URL. The walk stops after MAX_FILES files and says so.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from agentbox.model.secret_rules import SecretFinding, SecretScan, content_findings, path_findings

MAX_READ = 1 << 20
MAX_FILES = 200_000
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_SKIP_CONTENT = ("node_modules/",)


def scan_folder(*, source: Path, max_files: int = MAX_FILES) -> SecretScan:
    findings: list[SecretFinding] = []
    files = 0
    for top, folders, names in os.walk(source, followlinks=False):
        folders.sort()
        relative_top = os.path.relpath(top, source)
        prefix = "" if relative_top == "." else relative_top.replace(os.sep, "/") + "/"
        for name in sorted(names):
            path = prefix + name
            full = os.path.join(top, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue  # gone since the listing
            if not stat.S_ISREG(st.st_mode):
                continue
            if files >= max_files:
                return SecretScan(findings=tuple(findings), files=files, complete=False)
            files += 1
            found = path_findings(path=path)  # a secret by what it is: its content need not be read
            if not found and _reads_content(path):
                found = content_findings(path=path, content=_head(full))
            findings.extend(found)
    return SecretScan(findings=tuple(findings), files=files, complete=True)


def _reads_content(path: str) -> bool:
    if path.startswith(".git/") or "/.git/" in path:
        return path.endswith(".git/config")
    return not any(part in f"/{path}" for part in (f"/{skip}" for skip in _SKIP_CONTENT))


def _head(path: str) -> bytes:
    try:
        fd = os.open(path, _OPEN_FILE)
    except OSError:
        return b""  # unreadable here: not shared readable either (the share says so)
    try:
        return os.read(fd, MAX_READ)
    except OSError:
        return b""
    finally:
        os.close(fd)
