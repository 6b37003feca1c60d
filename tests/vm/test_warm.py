"""Warm clones on real guests: one golden state (booted and saved once), two clones of it,
each with its own identity, checked from inside the guests; and a reset of a clone."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentbox.model.progress import CancelToken
from agentbox.services.golden import GoldenStore
from agentbox.stores.ssh_config import alias

from .conftest import VmEnv, quiet, run_in

FACTS = "hostname; cat /etc/machine-id; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo"
CLONES = ("warm-a", "warm-b")


@pytest.fixture(scope="module")
def clones(vm_env: VmEnv) -> Iterator[tuple[str, str]]:
    """Two clones of one golden state, both running; destroyed at the end of the module."""
    try:
        for name in CLONES:
            vm_env.create(name, warm=True)
        yield CLONES
    finally:
        services = vm_env.services()
        for name in CLONES:
            if name in {w.name for w in services.workspaces.list()}:
                services.workspaces.destroy(name=name, on_progress=quiet)


def _facts(env: VmEnv, name: str) -> list[str]:
    code, out, err = run_in(env, name, "sh", "-c", FACTS)
    assert code == 0, err
    return out.split()


def _login(env: VmEnv, *, target: str, key: Path) -> subprocess.CompletedProcess[str]:
    """SSH into `target` with `key`, the target's host key pinned, no other key offered."""
    ctx = env.context()
    record = ctx.records.load(name=target)
    assert record is not None
    files = ctx.records.files(name=target)
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={files.known_hosts}", "-o", f"HostKeyAlias={alias(target)}",
         "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=60", "-p", str(record.ssh_port),
         "agent@127.0.0.1", "true"],
        capture_output=True, text=True, timeout=180, check=False)


def test_both_clones_come_from_one_golden_state(vm_env: VmEnv, clones: tuple[str, str]) -> None:
    ctx = vm_env.context()
    records = [ctx.records.load(name=name) for name in clones]
    golden_ids = {record.golden_id for record in records if record is not None}
    assert len(golden_ids) == 1 and "" not in golden_ids
    assert [g.golden_id for g in GoldenStore(ctx=ctx).list()] == list(golden_ids)


def test_clones_differ_in_hostname_machine_id_random_stream_and_host_key(vm_env: VmEnv,
                                                                          clones: tuple[str, str]) -> None:
    (host_a, id_a, random_a), (host_b, id_b, random_b) = (_facts(vm_env, name) for name in clones)
    assert (host_a, host_b) == clones
    assert id_a != id_b and len(id_a) == len(id_b) == 32
    assert random_a != random_b
    ctx = vm_env.context()
    keys = {ctx.records.load(name=name).host_key_public for name in clones}  # type: ignore[union-attr]
    assert len(keys) == 2
    # The key each clone presents is its own pinned one (StrictHostKeyChecking=yes against it).
    for name in clones:
        assert _login(vm_env, target=name, key=ctx.records.files(name=name).client_key).returncode == 0


def test_each_clone_accepts_only_its_own_key_and_never_the_golden_bootstrap_key(vm_env: VmEnv,
                                                                               clones: tuple[str, str]) -> None:
    ctx = vm_env.context()
    [golden] = GoldenStore(ctx=ctx).list()
    a, b = clones
    for target, other in ((a, b), (b, a)):
        for key in (ctx.records.files(name=other).client_key, golden.bootstrap_key):
            refused = _login(vm_env, target=target, key=key)
            assert refused.returncode == 255 and "Permission denied" in refused.stderr, (target, key, refused)


def test_a_reset_clone_gets_a_new_machine_id_random_stream_and_the_right_clock(vm_env: VmEnv,
                                                                             clones: tuple[str, str]) -> None:
    name = clones[0]
    before = _facts(vm_env, name)
    time.sleep(3)  # the clean state's clock falls behind
    vm_env.services().snapshots.reset(name=name, on_progress=quiet, cancel=CancelToken())
    after = _facts(vm_env, name)
    assert after[0] == name
    assert after[1] != before[1] and after[2] != before[2]
    code, out, _ = run_in(vm_env, name, "date", "+%s.%N")
    assert code == 0 and abs(time.time() - float(out)) < 2.0
