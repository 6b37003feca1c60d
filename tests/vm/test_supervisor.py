"""The workspace's supervisor on a real guest: it brings dead helpers back by itself, egress
is closed while they are down, it goes away with the VM, and a time-limited session still
ends (receipt, reset) after a simulated host restart (supervisor and helpers killed,
libvirtd restarted), once `start` repairs."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentbox.audit import AuditRecord, read_records
from agentbox.host.process_identity import ProcessIdentity, is_alive
from agentbox.model.progress import CancelToken
from agentbox.stores.receipts import ReceiptStore
from agentbox.host.supervision_files import SupervisorFiles, SupervisorState

from .conftest import EGRESS_TEST_HOST, VmEnv, quiet, run_in
from .test_network import curl, net, servers  # noqa: F401 - servers is a fixture used here



def audit(env: VmEnv, name: str) -> list[AuditRecord]:
    return list(read_records(path=env.paths.audit_log(name)))


def supervisor_files(env: VmEnv, name: str) -> SupervisorFiles:
    return SupervisorFiles(egress_dir=env.context().records.files(name=name).egress_dir)


def state(env: VmEnv, name: str) -> SupervisorState:
    current = supervisor_files(env, name).read_state()
    assert current is not None, "the running workspace has a supervisor"
    return current


def until(check: Callable[[], bool], *, what: str, timeout_s: float = 30.0) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - started


def kill(identity: ProcessIdentity | None) -> None:
    assert identity is not None and is_alive(identity)
    os.kill(identity.pid, signal.SIGKILL)


@pytest.fixture()
def allowed(vm_env: VmEnv, clean_workspace: str, monkeypatch: pytest.MonkeyPatch,
            request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    port = request.getfixturevalue("servers")[0]  # test_network's module fixture
    vm_env.cli_env(monkeypatch)
    network = vm_env.services().network
    before = network.policy(name=clean_workspace)  # the policy outlives resets: put it back after
    net(vm_env, clean_workspace, "allowlist")
    net(vm_env, "allow", clean_workspace, f"127.0.0.1:{port}")
    assert curl(vm_env, clean_workspace, port)[0] == 0
    yield clean_workspace, port
    if vm_env.services().network.policy(name=clean_workspace) != before:
        net(vm_env, "deny", clean_workspace, f"127.0.0.1:{port}")
        net(vm_env, clean_workspace, before.mode.value)


def restart_libvirtd() -> None:
    """Restart libvirtd the way scripts/setup.sh started it: through systemd where there is
    one, else the daemon it started by hand (found by its pid file). Running QEMU guests
    survive a libvirtd restart; libvirt reconnects to them."""
    if Path("/run/systemd/system").is_dir():
        subprocess.run(["systemctl", "restart", "libvirtd"], check=True, capture_output=True)
    else:
        pid = int(Path("/run/libvirtd.pid").read_text().strip())
        os.kill(pid, signal.SIGTERM)
        until(lambda: not Path(f"/proc/{pid}").exists(), what="libvirtd stops", timeout_s=30)
        subprocess.run(["libvirtd", "-d"], check=True, capture_output=True)
    until(lambda: subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True).returncode == 0,
          what="libvirtd answers again", timeout_s=60)


@pytest.mark.parametrize("helper", ["proxy", "forward"])
def test_a_killed_helper_cuts_egress_at_once_and_is_back_without_any_command(
        vm_env: VmEnv, allowed: tuple[str, int], helper: str) -> None:
    name, port = allowed
    before = state(vm_env, name)
    download: dict[str, object] = {}

    def slow_download() -> None:  # one line every 0.2 s for a minute, through the proxy
        code, out, err = run_in(vm_env, name, "curl", "-sS", "-m", "90", f"http://{EGRESS_TEST_HOST}:{port}/slow")
        download["result"] = (code, out + err)

    runner = threading.Thread(target=slow_download, daemon=True)
    runner.start()
    time.sleep(8)  # the SSH exec and curl are under way (TCG)
    kill(getattr(before, helper))
    runner.join(timeout=40)
    assert not runner.is_alive(), f"the download must be cut when the {helper} dies"
    code, out = download["result"]  # type: ignore[misc]
    # The server delimits the body by closing (HTTP/1.0), so curl may call a cut body complete:
    # what counts is that it stopped short, long before the minute it would take.
    assert code != 28 and "line 0" in out and "line 299" not in out, (code, out[-300:])
    took = until(lambda: getattr(supervisor_files(vm_env, name).read_state(), helper, None) not in (
        None, getattr(before, helper)) and vm_env.services().network.show(name=name).forward_connected,
                 what=f"the supervisor restarts the {helper}")
    print(f"{helper} back {took:.1f} s after the download ended")
    assert curl(vm_env, name, port) == (0, f"hello from {port}\n")
    assert supervisor_files(vm_env, name).supervisor() is not None


def test_a_killed_supervisor_takes_its_helpers_along_and_start_repairs(
        vm_env: VmEnv, allowed: tuple[str, int]) -> None:
    name, port = allowed
    before = state(vm_env, name)
    supervisor = supervisor_files(vm_env, name).supervisor()
    kill(supervisor)
    until(lambda: not is_alive(before.proxy) and not is_alive(before.forward),
          what="the kernel ends the helpers of a killed supervisor", timeout_s=10)
    assert curl(vm_env, name, port)[0] != 0
    status = vm_env.services().network.show(name=name)
    assert "supervisor is not running" in status.egress, "a read says so and repairs nothing"
    vm_env.services().workspaces.start(name=name, on_progress=quiet, cancel=CancelToken())
    assert curl(vm_env, name, port) == (0, f"hello from {port}\n")
    assert "repaired" in [r.event for r in audit(vm_env, name)][-8:]


def test_a_vm_stopped_from_outside_takes_the_supervisor_and_its_helpers_along(
        vm_env: VmEnv, allowed: tuple[str, int]) -> None:
    name, _ = allowed
    before = state(vm_env, name)
    supervisor = supervisor_files(vm_env, name).supervisor()
    domain = vm_env.context().domain_name(name=name)
    subprocess.run(["virsh", "-c", "qemu:///system", "destroy", domain], check=True, capture_output=True)
    until(lambda: not is_alive(supervisor) and not is_alive(before.proxy) and not is_alive(before.forward),
          what="supervisor, proxy and forward end with the VM", timeout_s=15)
    assert supervisor_files(vm_env, name).read_state() is None
    # The next test's reset brings the workspace back from its clean state.


def test_an_overdue_session_ends_with_a_receipt_and_a_reset_after_a_simulated_host_restart(
        vm_env: VmEnv, clean_workspace: str) -> None:
    name = clean_workspace
    services = vm_env.services()
    session = services.sessions.start(name=name, max_minutes=0.25, on_progress=quiet, cancel=CancelToken())
    assert run_in(vm_env, name, "sh", "-c", "echo canary > ~/session-canary")[0] == 0
    before = state(vm_env, name)
    kill(supervisor_files(vm_env, name).supervisor())  # the host "restarts": no supervisor, no helpers
    until(lambda: not is_alive(before.proxy), what="helpers gone", timeout_s=10)
    restart_libvirtd()  # ... and its libvirtd; the VM itself runs on
    time.sleep(16)  # past the deadline, with nobody watching
    assert services.sessions.current(name=name) is not None, "nothing ended it while no supervisor ran"
    services.workspaces.start(name=name, on_progress=quiet, cancel=CancelToken())
    until(lambda: services.sessions.current(name=name) is None,
          what="the repaired supervisor ends the overdue session", timeout_s=120)
    receipts = ReceiptStore(paths=vm_env.paths).list(name=name)
    assert session.id in [r.id for r in receipts]
    ended = [r for r in audit(vm_env, name) if r.event == "session.ended"][-1]
    assert ended.details["reason"] == "time limit reached" and ended.details["reset"] == "snapshot"
    code, out, _ = run_in(vm_env, name, "sh", "-c", "cat ~/session-canary 2>/dev/null || echo gone")
    assert out.strip() == "gone"
