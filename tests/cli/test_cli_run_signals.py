"""`agentbox run` ended by a signal instead of by its command: `kill` (SIGTERM) or a closed
terminal (SIGHUP, after which the terminal takes no more output). Either way, the throw-away
workspace it made is destroyed before it exits, as after Ctrl-C, and the exit code says
which signal it was (128 + its number)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORKTREE = Path(__file__).resolve().parents[2]


def start_run(work: Path, *, signal_in_cleanup: int | None = None) -> subprocess.Popen[bytes]:
    """`agentbox run -- hang` on the Fake backend, once the command is running in the guest."""
    env = {**os.environ, "PYTHONPATH": str(WORKTREE)}
    if signal_in_cleanup is not None:
        env["FAKE_RUN_SIGNAL_IN_CLEANUP"] = str(signal_in_cleanup)
    process = subprocess.Popen([sys.executable, "-m", "tests.cli.fake_run", str(work), "--", "hang"],
                               cwd=WORKTREE, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (work / "running").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            _, err = process.communicate()
            pytest.fail(f"the run never got to its command:\n{err.decode(errors='replace')}")
        time.sleep(0.05)
    return process


def left_behind(work: Path) -> dict[str, list[str]]:
    report = work / "left.json"
    assert report.exists(), "the run process ended without its cleanup (killed by the signal?)"
    left = json.loads(report.read_text())
    left["disks on the host"] = sorted(str(p) for p in (work / "storage").rglob("*") if p.is_file())
    return left


def nothing(left: dict[str, list[str]]) -> bool:
    return not any(left.values())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signalled_run_destroys_its_throw_away_workspace(signum: signal.Signals, tmp_path: Path) -> None:
    process = start_run(tmp_path)
    process.send_signal(signum)
    try:
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signum
    assert f"{signum.name}: the run was stopped; its throw-away workspace was destroyed" in err.decode()
    assert "removing VM agentbox-run-" in err.decode()
    assert nothing(left_behind(tmp_path)), left_behind(tmp_path)


def test_a_run_whose_terminal_closed_still_cleans_up(tmp_path: Path) -> None:
    """The terminal is gone: every write to it fails. The cleanup goes on regardless."""
    process = start_run(tmp_path)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    process.stderr.close()
    process.send_signal(signal.SIGHUP)
    try:
        process.wait(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGHUP
    assert nothing(left_behind(tmp_path)), left_behind(tmp_path)


def test_a_second_signal_during_the_cleanup_does_not_cut_it_short(tmp_path: Path) -> None:
    """SIGTERM, then the terminal's SIGHUP just as the VM is being removed."""
    process = start_run(tmp_path, signal_in_cleanup=signal.SIGHUP)
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, err.decode()  # the first one is what ended it
    assert "files: removing keys and records" in err.decode()
    assert nothing(left_behind(tmp_path)), left_behind(tmp_path)
