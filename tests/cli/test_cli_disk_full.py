"""A full storage dir during `create` (a 64 KiB tmpfs mounted there; the tests run as root):
a clear error naming the file and the reason, and nothing half-made is left behind."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

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
