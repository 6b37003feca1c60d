"""A checkpoint when the storage dir is full, on a real guest: the storage dir is a small ext4
file system of its own (loop-mounted), filled to the last few MiB once the workspace runs, so
the RAM snapshot cannot be written. A clear error, no snapshot left behind, and the workspace
still resets once there is room again."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentbox.cli.main import main
from agentbox.model.progress import CancelToken

from .conftest import TEST_STORAGE_ROOT, VmEnv, _log, cleanup_env, run_in

FS_GIB = 4
LEAVE_MIB = 16  # far less than the guest's RAM: its state cannot be saved


@pytest.fixture()
def small_storage_env(tmp_path: Path) -> Iterator[VmEnv]:
    run = uuid.uuid4().hex[:6]
    image = TEST_STORAGE_ROOT / f"{run}.img"
    storage = TEST_STORAGE_ROOT / run
    TEST_STORAGE_ROOT.mkdir(parents=True, exist_ok=True)
    subprocess.run(["truncate", "-s", f"{FS_GIB}G", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-m", "0", str(image)], check=True, capture_output=True)
    storage.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(storage)], check=True, capture_output=True)
    env = VmEnv(root=tmp_path / "root", storage=storage, prefix=f"abtest-{run}-")
    try:
        yield env
    finally:
        try:
            cleanup_env(env)  # removes the storage dir's contents (and tries the dir itself)
        finally:
            subprocess.run(["umount", "--lazy", str(storage)], check=False, capture_output=True)
            storage.rmdir()
            image.unlink()


def fill(storage: Path, *, leave_mib: int) -> Path:
    filler = storage / "filler"
    stats = os.statvfs(storage)
    size = stats.f_bavail * stats.f_frsize - leave_mib * 2**20
    subprocess.run(["fallocate", "-l", str(size), str(filler)], check=True)
    return filler


def cli(env: VmEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        *argv: str) -> tuple[int, str, str]:
    env.cli_env(monkeypatch)
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_checkpoint_on_a_full_storage_dir_fails_clearly_keeps_nothing_and_reset_works(
        small_storage_env: VmEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    env = small_storage_env
    env.create("full")
    assert run_in(env, "full", "sync")[0] == 0  # what the guest has written is on the disk before it fills
    filler = fill(env.storage, leave_mib=LEAVE_MIB)

    code, out, err = cli(env, monkeypatch, capsys, "checkpoint", "full", "before")
    print(f"checkpoint on a full storage dir: exit {code}\n{out}{err}")
    assert code != 0 and "Traceback" not in err
    assert "No space left on device" in err or "no space" in err.lower(), err
    assert "hint:" in err
    assert [c.label for c in env.services().snapshots.checkpoints(name="full")] == []

    filler.unlink()
    env.services().snapshots.reset(name="full", on_progress=_log, cancel=CancelToken())
    code, out, _ = run_in(env, "full", "echo", "back")
    assert (code, out) == (0, "back\n")
    code, out, err = cli(env, monkeypatch, capsys, "audit", "verify", "full")
    assert code == 0, out + err
