"""A full storage dir during `create`, a full data dir during `create` and `checkpoint` (a small
tmpfs mounted there; the tests run as root): a clear error naming the file and the reason,
nothing half-made is left behind, and the workspace still resets. (A full storage dir during
a checkpoint needs a real guest: tests/vm/test_full_storage.py.)"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agentbox.audit import AuditLog

from .stored_world import run_cli, running_egress, stored_domains


@pytest.fixture()
def full_storage(tmp_path: Path) -> Iterator[Path]:
    storage = tmp_path / "storage"
    storage.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(storage)], check=True, capture_output=True)
    try:
        yield storage
    finally:
        subprocess.run(["umount", "--lazy", str(storage)], check=True, capture_output=True)


def test_a_create_on_a_full_storage_dir_says_so_and_leaves_nothing(tmp_path: Path, full_storage: Path) -> None:
    done = run_cli(tmp_path, "create", "ws")
    assert done.code != 0 and "No space left on device" in done.err and "Traceback" not in done.err, done.err
    assert "removing what it made" in done.err
    assert run_cli(tmp_path, "list", "--json").out.strip() == "[]"
    assert stored_domains(tmp_path) == [] and running_egress(tmp_path) == []
    assert [p for p in full_storage.rglob("*") if p.is_file()] == []
    assert not (tmp_path / "root" / "data" / "workspaces" / "ws").exists()


PAGE = 4096  # what tmpfs allocates a file's bytes in


@contextmanager
def data_dir_with(tmp_path: Path, *, free_kib: int) -> Iterator[Path]:
    """The data dir on a 256 KiB tmpfs that a filler leaves `free_kib` of (remove it to free space)."""
    data = tmp_path / "root" / "data"
    data.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(data)], check=True, capture_output=True)
    try:
        fill(data / "filler", leave_kib=free_kib)
        yield data / "filler"
    finally:
        subprocess.run(["umount", "--lazy", str(data)], check=True, capture_output=True)


def fill(filler: Path, *, leave_kib: int) -> None:
    free = os.statvfs(filler.parent).f_bavail * os.statvfs(filler.parent).f_frsize
    with filler.open("ab") as out:
        with contextlib.suppress(OSError):
            out.write(b"x" * max(free - leave_kib * 1024, 0))


def end_audit_log_at_a_page(path: Path) -> None:
    """Valid records until the log's last tmpfs page is all but full: its next record needs a page."""
    log = AuditLog(path=path)
    before = path.stat().st_size
    log.append(event="padding", details={"x": ""})
    fixed = path.stat().st_size - before
    slack = -path.stat().st_size % PAGE
    log.append(event="padding", details={"x": "." * ((slack - fixed - 40) % PAGE)})
    assert -path.stat().st_size % PAGE < 100


def workspace_files(tmp_path: Path) -> list[str]:
    data = tmp_path / "root" / "data"
    return sorted(str(p.relative_to(data)) for p in data.rglob("*") if p.is_file() and p.name != "filler")


# 0: the lock's identity cannot be written; 16: the keys; 32: the record, at the very end
@pytest.mark.parametrize("free_kib", [0, 16, 32])
def test_a_create_with_a_full_data_dir_names_the_file_and_leaves_nothing(tmp_path: Path, free_kib: int) -> None:
    with data_dir_with(tmp_path, free_kib=free_kib) as filler:
        done = run_cli(tmp_path, "create", "ws")
        assert done.code != 0 and "Traceback" not in done.err, done.err
        assert re.search(r"error: .*/root/data/\S+: No space left on device", done.err), done.err
        assert "hint: free some space" in done.err or "hint: check the free space" in done.err
        assert stored_domains(tmp_path) == [] and running_egress(tmp_path) == []
        storage = tmp_path / "storage"
        assert not storage.exists() or [p for p in storage.rglob("*") if p.is_file()] == []
        # What stays: the lock file, and the audit log if its first record fitted (it outlives a workspace)
        assert set(workspace_files(tmp_path)) <= {"locks/ws.lock", "audit/ws.jsonl"}
        filler.unlink()
        assert run_cli(tmp_path, "list", "--json").out.strip() == "[]"
        assert run_cli(tmp_path, "create", "ws").code == 0  # once there is room, the name is free


def test_a_checkpoint_with_a_full_data_dir_is_not_kept_and_the_workspace_still_resets(tmp_path: Path) -> None:
    with data_dir_with(tmp_path, free_kib=96) as filler:
        assert run_cli(tmp_path, "create", "ws").code == 0
        end_audit_log_at_a_page(tmp_path / "root" / "data" / "audit" / "ws.jsonl")
        fill(filler, leave_kib=4)  # one page: the lock's identity fits, the checkpoint's audit record does not
        done = run_cli(tmp_path, "checkpoint", "ws", "before")
        assert done.code != 0 and "Traceback" not in done.err, done.err
        assert "checkpoint before of ws was not kept" in done.err and "No space left on device" in done.err
        assert "hint: check the free space" in done.err
        assert "before" not in run_cli(tmp_path, "checkpoints", "ws").out  # no snapshot the trail does not vouch for
        filler.unlink()
        assert run_cli(tmp_path, "reset", "ws").code == 0
        verified = run_cli(tmp_path, "audit", "verify", "ws")  # the log on the full disk: not "no audit log"
        assert verified.code == 0 and "ws: audit log intact" in verified.out, verified.out + verified.err
