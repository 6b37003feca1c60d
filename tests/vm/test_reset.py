"""Reset from inside a real guest: whatever the guest did, one reset brings back the state
right after provisioning, without the guest's help, with a fresh RNG and the right clock."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from agentbox.cli.main import main
from agentbox.errors import NotFound
from agentbox.model.progress import CancelToken
from agentbox.model.workspace import WorkspaceState
from agentbox.services.snapshots import RestorePath

from .conftest import VmEnv, quiet, run_in

MESS = " && ".join([
    "echo canary > ~/canary-home",
    "echo canary | sudo tee /etc/canary-etc >/dev/null",
    "(setsid nohup sleep 100007 >/dev/null 2>&1 &)",
    "sudo dpkg --remove --force-depends curl >/dev/null 2>&1",
    "sync",
])
CHECK = ("ls ~/canary-home /etc/canary-etc 2>/dev/null; pgrep -fa 'slee[p] 100007' || true; "
         "dpkg-query -W -f='${Status}\\n' curl 2>/dev/null || echo curl-missing")


def _reset(env: VmEnv, name: str):  # type: ignore[no-untyped-def]
    return env.services().snapshots.reset(name=name, on_progress=quiet, cancel=CancelToken())


def test_reset_undoes_files_processes_and_packages(vm_env: VmEnv, clean_workspace: str) -> None:
    assert run_in(vm_env, clean_workspace, "sh", "-c", MESS)[0] == 0
    code, messy, _ = run_in(vm_env, clean_workspace, "sh", "-c", CHECK)
    assert "canary-home" in messy and "canary-etc" in messy and "sleep 100007" in messy
    assert "install ok installed" not in messy

    outcome = _reset(vm_env, clean_workspace)

    assert outcome.path is RestorePath.SNAPSHOT and outcome.running
    # exec works: the user key is still accepted and the host key is still the pinned one.
    code, after, _ = run_in(vm_env, clean_workspace, "sh", "-c", CHECK)
    assert code == 0
    assert after.strip() == "install ok installed"


def test_two_resets_in_a_row_both_work(vm_env: VmEnv, clean_workspace: str) -> None:
    for _ in range(2):
        assert _reset(vm_env, clean_workspace).running
        assert run_in(vm_env, clean_workspace, "true")[0] == 0


def test_the_guest_random_stream_differs_across_resets(vm_env: VmEnv, clean_workspace: str) -> None:
    streams = []
    for _ in range(2):
        _reset(vm_env, clean_workspace)
        code, out, _ = run_in(vm_env, clean_workspace, "sh", "-c", "head -c 32 /dev/urandom | od -An -tx1")
        assert code == 0
        streams.append(out)
    assert streams[0] != streams[1]


def test_the_guest_clock_is_right_after_a_reset(vm_env: VmEnv, clean_workspace: str) -> None:
    time.sleep(5)  # the clean snapshot's clock is minutes old by now; let it fall further behind
    _reset(vm_env, clean_workspace)
    code, out, _ = run_in(vm_env, clean_workspace, "date", "+%s.%N")
    host = time.time()
    assert code == 0
    # The guest read its clock before the host read its own: guest <= host, and close.
    assert abs(host - float(out)) < 2.0


def test_a_crashed_guest_resets(vm_env: VmEnv, clean_workspace: str) -> None:
    run_in(vm_env, clean_workspace, "sh", "-c",
           "(setsid sudo sh -c 'sleep 1; echo c > /proc/sysrq-trigger' >/dev/null 2>&1 &)")
    time.sleep(5)
    outcome = _reset(vm_env, clean_workspace)
    assert outcome.running
    assert run_in(vm_env, clean_workspace, "echo", "alive")[1] == "alive\n"


def test_a_stopped_workspace_resets(vm_env: VmEnv, clean_workspace: str, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert run_in(vm_env, clean_workspace, "sh", "-c", "echo x > ~/stopped-canary && sync")[0] == 0
    workspaces = vm_env.services().workspaces
    workspaces.stop(name=clean_workspace, force=True, on_progress=quiet, cancel=CancelToken())
    assert workspaces.get(name=clean_workspace).state is WorkspaceState.STOPPED
    vm_env.cli_env(monkeypatch)
    assert main(["reset", clean_workspace]) == 0
    assert "back to clean" in capsys.readouterr().out
    assert workspaces.get(name=clean_workspace).state is WorkspaceState.RUNNING
    assert run_in(vm_env, clean_workspace, "sh", "-c", "ls ~/stopped-canary 2>&1 || true")[1].count("No such") == 1


def test_checkpoints_save_restore_and_delete(vm_env: VmEnv, clean_workspace: str) -> None:
    snapshots = vm_env.services().snapshots
    assert run_in(vm_env, clean_workspace, "sh", "-c", "echo one > ~/marker && sync")[0] == 0
    saved = snapshots.checkpoint(name=clean_workspace, label="one")
    assert saved.with_memory
    assert run_in(vm_env, clean_workspace, "sh", "-c", "echo two > ~/marker && sync")[0] == 0
    outcome = snapshots.restore(name=clean_workspace, label="one", on_progress=quiet, cancel=CancelToken())
    assert outcome.running
    assert run_in(vm_env, clean_workspace, "cat", "marker")[1] == "one\n"
    assert [c.label for c in snapshots.checkpoints(name=clean_workspace)] == ["one"]
    snapshots.delete_checkpoint(name=clean_workspace, label="one")
    assert snapshots.checkpoints(name=clean_workspace) == ()
    with pytest.raises(NotFound):
        snapshots.restore(name=clean_workspace, label="one", on_progress=quiet, cancel=CancelToken())


def test_the_base_image_is_never_written(vm_env: VmEnv, clean_workspace: str) -> None:
    record = vm_env.context().records.load(name=clean_workspace)
    [image] = [i for i in vm_env.services().images.list_images() if i.image_id == record.image_id]
    digest = hashlib.sha256()
    with Path(image.disk).open("rb") as disk:
        for block in iter(lambda: disk.read(1 << 20), b""):
            digest.update(block)
    assert digest.hexdigest() == image.sha256
