"""Standby on a real guest: a paused clean copy in the workspace's second domain, and resets
that swap to it. From inside the guest: the canary is gone, the machine-id and the random
stream are new, the clock is right, the share is still there and read-only, the allowlist
still lets the allowed server through and no other, all on the same SSH port. With a
checkpoint the reset reverts in place; standby off removes the copy."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from agentbox.backends.base import DomainState
from agentbox.model.progress import CancelToken
from agentbox.services.snapshots import RestorePath
from agentbox.stores.records import other_slot

from .conftest import EGRESS_TEST_HOST, VmEnv, _log, quiet, run_in
from .test_network import servers  # noqa: F401  (the module's HTTP servers on 127.0.0.1)

FACTS = "cat /etc/machine-id; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s.%N"


@pytest.fixture(scope="module")
def standby_guest(vm_env: VmEnv, shared_workspace: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The shared guest with a share and standby on, for the module (each test's own reset,
    through clean_workspace, is then a swap); both undone after."""
    services = vm_env.services()
    project = tmp_path_factory.mktemp("project")
    (project / "notes.txt").write_text("shared before standby\n")
    project.chmod(0o755)
    services.snapshots.reset(name=shared_workspace, on_progress=quiet, cancel=CancelToken())
    services.shares.add(name=shared_workspace, source=str(project), tag="project")
    services.standby.set(name=shared_workspace, on=True, on_progress=_log, cancel=CancelToken())
    try:
        yield shared_workspace
    finally:
        services.standby.set(name=shared_workspace, on=False, on_progress=quiet, cancel=CancelToken())
        services.shares.remove(name=shared_workspace, tag="project")


@pytest.fixture()
def with_standby(standby_guest: str, clean_workspace: str) -> str:
    return clean_workspace


def _facts(env: VmEnv, name: str) -> tuple[str, str, float]:
    code, out, err = run_in(env, name, "sh", "-c", FACTS)
    assert code == 0, err
    machine_id, random, clock = out.split()
    return machine_id, random, float(clock)


def _domain_state(env: VmEnv, domain: str) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", "domstate", domain], check=True, capture_output=True,
                          text=True).stdout.strip()


def _curl(env: VmEnv, name: str, port: int) -> str:
    _, out, err = run_in(env, name, "curl", "-sS", "-m", "20", f"http://{EGRESS_TEST_HOST}:{port}/")
    return out + err


def test_a_reset_with_standby_is_a_swap_that_keeps_shares_network_and_port(
        vm_env: VmEnv, with_standby: str, servers: tuple[int, int]) -> None:  # noqa: F811
    name = with_standby
    services = vm_env.services()
    ctx = vm_env.context()
    before = ctx.records.load(name=name)
    assert before is not None and before.standby_snapshot
    assert _domain_state(vm_env, other_slot(before.domain)) == "paused"
    services.network.set_mode(name=name, mode="allowlist")
    services.network.allow(name=name, entry=f"127.0.0.1:{servers[0]}")
    assert _curl(vm_env, name, servers[0]) == f"hello from {servers[0]}\n"
    assert run_in(vm_env, name, "sh", "-c", "echo dirty > ~/canary && sync")[0] == 0
    machine_id, random, _ = _facts(vm_env, name)
    time.sleep(3)  # the copy's clock is behind: the swap must set it

    for _ in range(2):  # to the second slot and back to the first
        outcome = services.snapshots.reset(name=name, on_progress=_log, cancel=CancelToken())
        print(f"standby reset: {outcome.duration_s:.2f} s to the workspace back ({outcome.path.value})")
        assert outcome.path is RestorePath.STANDBY and outcome.reason == "", outcome
        now = ctx.records.load(name=name)
        assert now is not None and now.ssh_port == before.ssh_port
        assert _domain_state(vm_env, now.domain) == "running"
        assert _domain_state(vm_env, other_slot(now.domain)) == "paused"  # the next copy already stands by
        code, out, _ = run_in(vm_env, name, "sh", "-c", "test -e ~/canary && echo dirty || echo clean")
        assert (code, out) == (0, "clean\n")
        new_id, new_random, clock = _facts(vm_env, name)
        assert new_id != machine_id and new_random != random and abs(clock - time.time()) < 2.0
        machine_id, random = new_id, new_random
        code, out, err = run_in(vm_env, name, "sh", "-c", "cat /mnt/shares/project/notes.txt; "
                                "touch /mnt/shares/project/x 2>&1 || echo refused")
        assert out.splitlines()[0] == "shared before standby" and "refused" in out, out + err
        assert _curl(vm_env, name, servers[0]) == f"hello from {servers[0]}\n"  # the forward is back
        assert f"hello from {servers[1]}" not in _curl(vm_env, name, servers[1])
        assert run_in(vm_env, name, "sh", "-c", "echo dirty > ~/canary && sync")[0] == 0
    [workspace] = [w for w in services.workspaces.list() if w.name == name]
    assert workspace.state.value == "running" and workspace.standby.value == "ready"


def test_with_a_checkpoint_the_reset_reverts_in_place_and_standby_off_removes_the_copy(
        vm_env: VmEnv, with_standby: str) -> None:
    name = with_standby
    services = vm_env.services()
    services.snapshots.checkpoint(name=name, label="kept")
    try:
        outcome = services.snapshots.reset(name=name, on_progress=_log, cancel=CancelToken())
        assert outcome.path is RestorePath.SNAPSHOT and "checkpoints" in outcome.reason
    finally:
        services.snapshots.delete_checkpoint(name=name, label="kept")
    record = vm_env.context().records.load(name=name)
    assert record is not None
    copy = other_slot(record.domain)
    services.standby.set(name=name, on=False, on_progress=quiet, cancel=CancelToken())
    assert vm_env.context().backend.get(name=copy) is None
    info = vm_env.context().backend.get(name=record.domain)
    assert info is not None and info.state is DomainState.RUNNING
    assert services.snapshots.reset(name=name, on_progress=quiet, cancel=CancelToken()).path is RestorePath.SNAPSHOT
