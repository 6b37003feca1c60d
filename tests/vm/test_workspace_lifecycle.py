"""A real workspace from create to destroy, as a user drives it. Tests run in file order
and share one guest: boot once, then each test builds on the state the previous left."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agentbox.cli.main import main
from agentbox.errors import HostKeyMismatch
from agentbox.model.progress import CancelToken
from agentbox.model.workspace import WorkspaceState
from agentbox.provision.cloudinit import GUEST_USER

from .conftest import VmEnv

NAME = "life"


def run_in(env: VmEnv, *argv: str) -> tuple[int, str, str]:
    out, err = bytearray(), bytearray()
    result = env.services().workspaces.exec(name=NAME, argv=list(argv), stdout=out.extend, stderr=err.extend)
    return result.exit_code, out.decode(), err.decode()


def domain_names() -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                          check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def env(vm_env: VmEnv) -> VmEnv:
    vm_env.create(NAME)
    return vm_env


def test_create_gives_a_running_workspace_provisioned_by_cloud_init(env: VmEnv) -> None:
    workspace = env.services().workspaces.get(name=NAME)
    assert workspace.state is WorkspaceState.RUNNING
    assert workspace.template == "debian-12"
    assert f"{env.prefix}{NAME}" in domain_names()
    code, out, _ = run_in(env, "sh", "-c", "id -un; hostname; cloud-init status")
    assert code == 0
    assert out.split("\n")[:3] == [GUEST_USER, NAME, "status: done"]


def test_the_user_data_agentbox_wrote_passes_cloud_inits_own_schema(env: VmEnv) -> None:
    code, out, err = run_in(env, "sudo", "cloud-init", "schema", "--system")
    assert code == 0, out + err
    assert "Valid schema" in out + err


def test_exec_streams_output_and_returns_the_remote_exit_code(env: VmEnv) -> None:
    code, out, err = run_in(env, "sh", "-c", "echo to-out; echo to-err >&2; exit 7")
    assert (code, out, err) == (7, "to-out\n", "to-err\n")


def test_exec_through_the_cli(env: VmEnv, monkeypatch: pytest.MonkeyPatch, capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    env.cli_env(monkeypatch)
    assert main(["exec", NAME, "--", "sh", "-c", "uname -s; exit 3"]) == 3
    assert capfdbinary.readouterr().out == b"Linux\n"


def test_ssh_runs_non_interactively_with_the_pinned_key(env: VmEnv, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    env.cli_env(monkeypatch)
    assert main(["ssh", NAME, "--", "cat", "/etc/hostname"]) == 0
    assert capfd.readouterr().out.strip() == NAME


def test_guest_sees_the_overlay_size_and_root_disk(env: VmEnv) -> None:
    code, out, _ = run_in(env, "sh", "-c", "lsblk -bndo SIZE /dev/vda")
    assert code == 0 and int(out.strip()) == 8 * 2**30


def test_stop_then_start_keeps_data(env: VmEnv) -> None:
    assert run_in(env, "sh", "-c", "echo kept > ~/canary && sync")[0] == 0
    services = env.services()
    stopped = services.workspaces.stop(name=NAME, force=False, on_progress=lambda _: None, cancel=CancelToken())
    assert stopped.state is WorkspaceState.STOPPED
    started = services.workspaces.start(name=NAME, on_progress=lambda _: None, cancel=CancelToken())
    assert started.state is WorkspaceState.RUNNING
    assert run_in(env, "cat", "/home/agent/canary")[1] == "kept\n"


def test_a_changed_guest_host_key_is_refused(env: VmEnv, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    # As a re-created or tampered guest would: new host keys, sshd restarted.
    code, _, err = run_in(env, "sudo", "sh", "-c",
                          "rm -f /etc/ssh/ssh_host_* && ssh-keygen -q -A && systemctl restart ssh")
    assert code == 0, err
    with pytest.raises(HostKeyMismatch):
        run_in(env, "true")
    env.cli_env(monkeypatch)
    assert main(["ssh", NAME, "--", "true"]) != 0
    assert "host key" in capfd.readouterr().err.lower()


def test_destroy_leaves_no_domain_and_no_file(env: VmEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    services = env.services()
    storage = Path(services.ctx.records.load(name=NAME).storage_dir)
    files = services.ctx.records.files(name=NAME).directory
    assert storage.exists() and files.exists()
    env.cli_env(monkeypatch)
    assert main(["destroy", NAME, "--yes"]) == 0
    assert f"{env.prefix}{NAME}" not in domain_names()
    assert not storage.exists()
    assert not files.exists()
    assert services.workspaces.list() == ()
