"""Process identity and workspace locks (host/): a PID alone never identifies a helper, and
looking at a lock never takes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agentbox.config.paths import AppPaths
from agentbox.errors import Busy
from agentbox.host.locks import holder, is_locked, lock_path, workspace_lock
from agentbox.host.process_identity import ProcessIdentity, current_identity, identity_of, is_alive, terminate
from agentbox.services.egress_runner import SupervisedEgress
from agentbox.stores.records import WorkspaceFiles
from agentbox.host.supervision_files import SupervisorFiles, SupervisorState


@pytest.fixture()
def sleeper() -> subprocess.Popen[bytes]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child
    child.kill()
    child.wait()


def test_a_reused_pid_is_not_the_process_that_was_recorded(sleeper: subprocess.Popen[bytes]) -> None:
    live = identity_of(sleeper.pid)
    assert live is not None and is_alive(live)
    stale = ProcessIdentity(pid=sleeper.pid, start=live.start - 1)  # same PID, another life
    assert not is_alive(stale)
    terminate(stale, timeout_s=0.5)
    assert sleeper.poll() is None, "a stale identity must never be signalled"
    terminate(live, timeout_s=5)
    assert sleeper.poll() is not None


def test_stopping_a_workspace_never_kills_another_workspaces_helper_through_a_stale_file(
        tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    """A's files name a PID that now belongs to B's proxy: stop(A) must leave it alone."""
    files = WorkspaceFiles(directory=tmp_path / "a")
    files.egress_dir.mkdir(parents=True)
    b_proxy = identity_of(sleeper.pid)
    assert b_proxy is not None
    sup = SupervisorFiles(egress_dir=files.egress_dir)
    wrong = ProcessIdentity(pid=sleeper.pid, start=b_proxy.start + 7).to_json()
    sup.lock.write_text(f'{{"pid": {wrong["pid"]}, "start": {wrong["start"]}}}\n')
    sup.write_state(SupervisorState(workspace="a", started="", proxy=ProcessIdentity(**wrong)))
    (files.egress_dir / "proxy.pid").write_text(f"{sleeper.pid}\n")  # what the old PID-file check trusted
    egress = SupervisedEgress(paths=AppPaths.under(root=tmp_path))
    assert not egress.health(files=files).supervised
    egress.stop(files=files)
    assert sleeper.poll() is None


def test_the_lock_file_names_its_holder_while_held_and_nobody_after(tmp_path: Path) -> None:
    paths = AppPaths.under(root=tmp_path)
    assert not is_locked(paths=paths, name="ws")
    with workspace_lock(paths=paths, name="ws"):
        assert holder(path=lock_path(paths=paths, name="ws")) == current_identity()
        assert is_locked(paths=paths, name="ws")
    assert not is_locked(paths=paths, name="ws")


def test_a_killed_holder_leaves_no_lock_behind(tmp_path: Path) -> None:
    code = ("import sys, time; from pathlib import Path; from agentbox.config.paths import AppPaths;"
            "from agentbox.host.locks import workspace_lock;"
            "cm = workspace_lock(paths=AppPaths.under(root=Path(sys.argv[1])), name='ws'); cm.__enter__();"
            "print('held', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert child.stdout is not None and child.stdout.readline() == b"held\n"
    paths = AppPaths.under(root=tmp_path)
    assert is_locked(paths=paths, name="ws")
    with pytest.raises(Busy):
        with workspace_lock(paths=paths, name="ws"):
            pass
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not is_locked(paths=paths, name="ws"), "its identity is still in the file, but it is dead"
    with workspace_lock(paths=paths, name="ws"):
        pass


def test_looking_at_a_lock_never_makes_a_starting_command_busy(tmp_path: Path) -> None:
    paths = AppPaths.under(root=tmp_path)
    busy, taken, stop = [0], [0], threading.Event()

    def command() -> None:  # takes and releases the lock as fast as it can
        while not stop.is_set():
            try:
                with workspace_lock(paths=paths, name="ws"):
                    taken[0] += 1
            except Busy:
                busy[0] += 1

    worker = threading.Thread(target=command)
    worker.start()
    deadline = time.monotonic() + 1.0
    looks = 0
    while time.monotonic() < deadline:
        is_locked(paths=paths, name="ws")
        looks += 1
    stop.set()
    worker.join()
    assert looks > 100 and taken[0] > 100
    assert busy[0] == 0
