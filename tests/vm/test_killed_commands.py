"""Real CLI processes on the session's shared guest: a reset SIGKILLed while libvirt reverts the
VM is recovered by the next reset (the guest answers, egress is supervised again and no helper
of before is left running beside the new ones), and a second command while a reset works is
refused as busy, never run alongside it. Every step of every command, on the Fake backend:
tests/cli/test_cli_killed.py; a killed create: test_failed_create.py; a killed destroy:
test_zz_destroy.py."""

from __future__ import annotations

import os
import signal
import subprocess

from agentbox.host.process_identity import ProcessIdentity, is_alive
from agentbox.host.supervision_files import SupervisorFiles

from .conftest import VmEnv, cli_process, read_until, run_in

BUSY_EXIT = 6


def helpers(env: VmEnv, name: str) -> list[ProcessIdentity]:
    """The workspace's supervisor, egress proxy and forward that run now."""
    files = SupervisorFiles(egress_dir=env.context().records.files(name=name).egress_dir)
    state = files.read_state()
    found = [files.supervisor()] + ([state.proxy, state.forward] if state else [])
    return [identity for identity in found if identity is not None and is_alive(identity)]


def cli(env: VmEnv, *argv: str) -> subprocess.CompletedProcess[str]:
    process = cli_process(env, *argv)
    out, err = process.communicate(timeout=900)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_a_reset_killed_while_it_reverts_is_recovered_by_the_next_reset(vm_env: VmEnv, clean_workspace: str) -> None:
    name = clean_workspace
    before = helpers(vm_env, name)
    assert len(before) == 3
    child = cli_process(vm_env, "reset", name)
    read_until(child, "[2/4] revert")
    os.kill(child.pid, signal.SIGKILL)
    child.wait()

    [workspace] = vm_env.services().workspaces.list()
    assert workspace.state.value in ("running", "stopped"), workspace  # whatever libvirt made of it: not busy
    again = cli(vm_env, "reset", name)
    assert again.returncode == 0, again.stderr
    [workspace] = vm_env.services().workspaces.list()
    assert workspace.state.value == "running"
    assert run_in(vm_env, name, "echo", "back")[:2] == (0, "back\n")
    status = vm_env.services().network.show(name=name)
    assert status.forward_connected, status
    now = helpers(vm_env, name)
    assert len(now) == 3
    assert [h for h in before if h not in now and is_alive(h)] == [], "a helper of before still runs"


def test_a_second_reset_or_a_destroy_while_a_reset_works_is_refused_as_busy(
        vm_env: VmEnv, clean_workspace: str) -> None:
    name = clean_workspace
    first = cli_process(vm_env, "reset", name)
    read_until(first, "[1/4] power off")
    for argv in (("reset", name), ("destroy", name, "--yes")):
        second = cli(vm_env, *argv)
        assert second.returncode == BUSY_EXIT and "is busy" in second.stderr, (argv, second.stderr)
    _, err = first.communicate(timeout=900)
    assert first.returncode == 0, err
    assert run_in(vm_env, name, "echo", "still here")[:2] == (0, "still here\n")
