"""Runs last (file order): destroying the session's shared workspace leaves nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agentbox.cli.main import main

from .conftest import VmEnv


def test_destroy_leaves_no_domain_and_no_file(vm_env: VmEnv, shared_workspace: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    records = vm_env.context().records
    storage = Path(records.load(name=shared_workspace).storage_dir)
    files = records.files(name=shared_workspace).directory
    assert storage.exists() and files.exists()
    vm_env.cli_env(monkeypatch)
    assert main(["destroy", shared_workspace, "--yes"]) == 0
    domains = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                             check=True, capture_output=True, text=True).stdout
    assert f"{vm_env.prefix}{shared_workspace}" not in domains
    assert not storage.exists()
    assert not files.exists()
    assert vm_env.services().workspaces.list() == ()
