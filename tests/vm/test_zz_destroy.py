"""Runs last (file order): a destroy of the session's shared workspace SIGKILLed half-way
shows as broken, and the next destroy leaves nothing: no domain, disk, seed, file, bind
mount, supervisor, egress proxy or forward."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from agentbox.cli.main import main
from agentbox.host import bind_mounts
from agentbox.host.process_identity import is_alive
from agentbox.model.workspace import WorkspaceState

from .conftest import VmEnv, cli_process, domain_names, read_until
from .test_killed_commands import helpers


def test_a_destroy_killed_half_way_is_finished_by_the_next_one(vm_env: VmEnv, shared_workspace: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    name = shared_workspace
    records = vm_env.context().records
    storage = Path(records.load(name=name).storage_dir)
    files = records.files(name=name).directory
    running = helpers(vm_env, name)
    assert storage.exists() and files.exists() and running
    child = cli_process(vm_env, "destroy", name, "--yes")
    read_until(child, "[2/3] disks")  # the VM is gone, its disks and files not yet
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    [workspace] = vm_env.services().workspaces.list()
    assert workspace.state is WorkspaceState.BROKEN and f"agentbox destroy {name}" in workspace.problem

    vm_env.cli_env(monkeypatch)
    assert main(["destroy", name, "--yes"]) == 0
    assert f"{vm_env.prefix}{name}" not in domain_names()
    assert not storage.exists()
    assert not files.exists()
    assert bind_mounts.leftover_mounts(under=vm_env.storage, keep=()) == []
    assert [h for h in running if is_alive(h)] == []
    assert vm_env.services().workspaces.list() == ()
