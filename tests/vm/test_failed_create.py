"""A create that fails, or is killed, must leave nothing half-made behind."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentbox.cli.main import main
from agentbox.errors import GuestError
from agentbox.model.workspace import WorkspaceState

from .conftest import VmEnv, cleanup_env, cli_process, domain_names, make_env, read_until


@pytest.fixture()
def silent_env(tmp_path: Path) -> Iterator[VmEnv]:
    """A template whose guest never answers: a blank disk with nothing to boot."""
    env = make_env(tmp_path / "root", boot_timeout_s=20)
    blank = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(blank), "1G"], check=True)
    digest = hashlib.sha256(blank.read_bytes()).hexdigest()
    env.paths.user_templates_dir.mkdir(parents=True)
    (env.paths.user_templates_dir / "silent.yaml").write_text(
        "name: silent\n"
        "description: a guest that never answers\n"
        f"image:\n  url: file://{blank}\n  sha256: {digest}\n"
        "resources: {vcpus: 1, memory_mib: 256, disk_gib: 4}\n"
    )
    yield env
    cleanup_env(env)


def leftovers(env: VmEnv, name: str) -> list[str]:
    found = [d for d in domain_names() if d.startswith(env.prefix)]
    storage = env.storage / "workspaces"
    if storage.exists():
        found += [str(p) for p in storage.iterdir()]
    if env.paths.workspace_dir(name).exists():
        found.append(str(env.paths.workspace_dir(name)))
    return found


def test_a_guest_that_never_answers_fails_create_and_leaves_nothing(silent_env: VmEnv) -> None:
    with pytest.raises(GuestError) as failure:
        silent_env.create("mute", template="silent")
    assert "did not answer" in failure.value.message
    assert "console" in (failure.value.hint or "")
    assert leftovers(silent_env, "mute") == []
    assert silent_env.services().workspaces.list() == ()


@pytest.mark.parametrize("step", ["[5/12] define", "[7/12] ssh"])  # defining the domain; VM up, no SSH yet
def test_a_create_killed_outright_shows_as_broken_and_destroy_removes_it(
        silent_env: VmEnv, monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    child = cli_process(silent_env, "create", "killed", "--template", "silent")
    read_until(child, step)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()

    [workspace] = silent_env.services().workspaces.list()
    assert workspace.name == "killed"
    assert workspace.state is WorkspaceState.BROKEN
    assert "agentbox destroy killed" in workspace.problem
    silent_env.cli_env(monkeypatch)
    assert main(["destroy", "killed", "--yes"]) == 0
    assert leftovers(silent_env, "killed") == []
