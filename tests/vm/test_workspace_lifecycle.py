"""A real workspace as a user drives it: provisioned, entered, stopped and started. Each
test gets the session's guest freshly reset, so none depends on another."""

from __future__ import annotations

import json
import subprocess

import pytest

from agentbox.cli.main import main
from agentbox.errors import HostKeyMismatch
from agentbox.model.progress import CancelToken
from agentbox.model.workspace import WorkspaceState
from agentbox.provision.cloudinit import GUEST_USER

from .conftest import VmEnv, quiet, run_in


def domain_names() -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                          check=True, capture_output=True, text=True).stdout


def test_create_gives_a_running_workspace_provisioned_by_cloud_init(vm_env: VmEnv, clean_workspace: str) -> None:
    workspace = vm_env.services().workspaces.get(name=clean_workspace)
    assert workspace.state is WorkspaceState.RUNNING
    assert workspace.template == "debian-12"
    assert f"{vm_env.prefix}{clean_workspace}" in domain_names()
    code, out, _ = run_in(vm_env, clean_workspace, "sh", "-c", "id -un; hostname; cloud-init status")
    assert code == 0
    assert out.split("\n")[:3] == [GUEST_USER, clean_workspace, "status: done"]


def test_the_user_data_agentbox_wrote_passes_cloud_inits_own_schema(vm_env: VmEnv, clean_workspace: str) -> None:
    code, out, err = run_in(vm_env, clean_workspace, "sudo", "cloud-init", "schema", "--system")
    assert code == 0, out + err
    assert "Valid cloud-config" in out + err


def test_exec_streams_output_and_returns_the_remote_exit_code(vm_env: VmEnv, clean_workspace: str) -> None:
    code, out, err = run_in(vm_env, clean_workspace, "sh", "-c", "echo to-out; echo to-err >&2; exit 7")
    assert (code, out, err) == (7, "to-out\n", "to-err\n")


def test_exec_through_the_cli(vm_env: VmEnv, clean_workspace: str, monkeypatch: pytest.MonkeyPatch,
                              capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    vm_env.cli_env(monkeypatch)
    assert main(["exec", clean_workspace, "--", "sh", "-c", "uname -s; exit 3"]) == 3
    assert capfdbinary.readouterr().out == b"Linux\n"


def test_ssh_runs_non_interactively_with_the_pinned_key(vm_env: VmEnv, clean_workspace: str,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capfd: pytest.CaptureFixture[str]) -> None:
    vm_env.cli_env(monkeypatch)
    assert main(["ssh", clean_workspace, "--", "cat", "/etc/hostname"]) == 0
    assert capfd.readouterr().out.strip() == clean_workspace


def test_guest_sees_the_overlay_size_and_root_disk(vm_env: VmEnv, clean_workspace: str) -> None:
    code, out, _ = run_in(vm_env, clean_workspace, "sh", "-c", "lsblk -bndo SIZE /dev/vda")
    assert code == 0 and int(out.strip()) == 8 * 2**30


def test_stop_then_start_keeps_data(vm_env: VmEnv, clean_workspace: str) -> None:
    assert run_in(vm_env, clean_workspace, "sh", "-c", "echo kept > ~/canary && sync")[0] == 0
    workspaces = vm_env.services().workspaces
    stopped = workspaces.stop(name=clean_workspace, force=False, on_progress=quiet, cancel=CancelToken())
    assert stopped.state is WorkspaceState.STOPPED
    records = [json.loads(line) for line in vm_env.paths.audit_log(clean_workspace).read_text().splitlines()]
    last = [r for r in records if r["event"] == "stopped"][-1]  # the trail's head is noted after it
    assert last["details"]["how"] == "graceful"  # the guest honoured ACPI
    started = workspaces.start(name=clean_workspace, on_progress=quiet, cancel=CancelToken())
    assert started.state is WorkspaceState.RUNNING
    assert run_in(vm_env, clean_workspace, "cat", f"/home/{GUEST_USER}/canary")[1] == "kept\n"


def test_a_changed_guest_host_key_is_refused(vm_env: VmEnv, clean_workspace: str,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capfd: pytest.CaptureFixture[str]) -> None:
    # As a re-created or tampered guest would: new host keys, sshd restarted.
    code, _, err = run_in(vm_env, clean_workspace, "sudo", "sh", "-c",
                          "rm -f /etc/ssh/ssh_host_* && ssh-keygen -q -A && systemctl restart ssh")
    assert code == 0, err
    with pytest.raises(HostKeyMismatch):
        run_in(vm_env, clean_workspace, "true")
    vm_env.cli_env(monkeypatch)
    assert main(["ssh", clean_workspace, "--", "true"]) != 0
    assert "host key" in capfd.readouterr().err.lower()
