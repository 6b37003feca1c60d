"""The QEMU backend (QEMU driven directly, no libvirt) with one real guest (TCG here):
create, exec, reset with a canary, a read-only share and network off/allowlist from inside
the guest, and a destroy that leaves no process and no file behind. The tests run in order
and share the module's guest; the last one destroys it."""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from agentbox.model.progress import CancelToken
from agentbox.model.shares import ShareMechanism
from agentbox.model.workspace import BackendKind, WorkspaceState
from agentbox.services.snapshots import RestorePath

from .test_network import HelloHandler
from .conftest import EGRESS_TEST_HOST, SHARED_IMAGE_DIR, TEST_STORAGE_ROOT, VmEnv, _log, quiet, run_in

NAME = "qemu1"


_Hello = HelloHandler  # test_network's: "hello from PORT" on /, a slow download on /slow


@pytest.fixture(scope="module")
def qenv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    run = uuid.uuid4().hex[:6]
    storage = TEST_STORAGE_ROOT / f"q{run}"
    storage.mkdir(parents=True, exist_ok=True)
    env = VmEnv(root=tmp_path_factory.mktemp("agentbox-qemu"), storage=storage, prefix=f"abtest-{run}-")
    with env.paths.settings_file.open("a") as settings:
        settings.write("backend: qemu\n")
    assert env.context().settings.image_dir == SHARED_IMAGE_DIR
    yield env
    services = env.services()
    for workspace in services.workspaces.list():  # a test failed before the destroy test
        services.workspaces.destroy(name=workspace.name, on_progress=quiet)
    shutil.rmtree(storage, ignore_errors=True)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[int, int]]:
    made = [ThreadingHTTPServer(("127.0.0.1", 0), _Hello) for _ in range(2)]
    for server in made:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield made[0].server_address[1], made[1].server_address[1]
    for server in made:
        server.shutdown()


def _processes_using(*paths: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(str(path) in cmdline for path in paths):
            found.append(f"{proc.name}: {cmdline}")
    return found


def test_create_runs_on_qemu_without_libvirt_and_exec_works(qenv: VmEnv) -> None:
    qenv.create(NAME)
    services = qenv.services()
    [workspace] = services.workspaces.list()
    assert (workspace.name, workspace.state, workspace.backend) == (NAME, WorkspaceState.RUNNING, BackendKind.QEMU)
    assert services.workspaces.record(name=NAME).clean_snapshot  # a RAM snapshot, through QMP
    assert run_in(qenv, NAME, "sh", "-c", "echo $((6 * 7))")[:2] == (0, "42\n")
    # QEMU is ours (a daemon of its own, as the invoking user), not one of libvirt's.
    state = qenv.paths.data_dir / "qemu" / workspace.domain
    [qemu] = [p for p in _processes_using(state / "qmp.sock") if "qemu-system" in p]
    assert "restrict=on" in qemu


def test_reset_removes_a_canary(qenv: VmEnv) -> None:
    mess = "echo canary > ~/canary && echo canary | sudo tee /etc/canary && sync"
    assert run_in(qenv, NAME, "sh", "-c", mess)[0] == 0
    outcome = qenv.services().snapshots.reset(name=NAME, on_progress=_log, cancel=CancelToken())
    assert outcome.path is RestorePath.SNAPSHOT and outcome.running
    code, out, _ = run_in(qenv, NAME, "sh", "-c", "ls ~/canary /etc/canary 2>&1; echo done")
    assert "No such file" in out and out.count("No such file") == 2 and code == 0


def test_a_share_is_read_only_from_inside_the_guest(qenv: VmEnv, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "hello.txt").write_text("hello from the host\n")
    tmp_path.chmod(0o755)
    shares = qenv.services().shares
    share = shares.add(name=NAME, source=str(project), tag="proj").share
    # Live here (root, virtiofsd): through a virtiofsd the QEMU backend started itself.
    assert share.mechanism is ShareMechanism.VIRTIOFS_RO_BIND
    state = qenv.paths.data_dir / "qemu" / qenv.services().workspaces.record(name=NAME).domain
    assert [p for p in _processes_using(state) if "virtiofsd" in p and "/shares/proj" in p]
    guest_dir = f"/mnt/shares/{share.tag}"
    assert run_in(qenv, NAME, "cat", f"{guest_dir}/hello.txt")[1] == "hello from the host\n"
    for attack in (f"echo x > {guest_dir}/new", f"echo x > {guest_dir}/hello.txt",
                   f"mount -o remount,rw {guest_dir} && echo x > {guest_dir}/after-remount"):
        code, out, err = run_in(qenv, NAME, "sudo", "sh", "-c", attack)
        assert code != 0, f"{attack!r} succeeded in the guest: {out}{err}"
    assert sorted(p.name for p in project.iterdir()) == ["hello.txt"]
    assert (project / "hello.txt").read_text() == "hello from the host\n"
    shares.remove(name=NAME, tag=share.tag)
    assert run_in(qenv, NAME, "sh", "-c", f"cat {guest_dir}/hello.txt")[0] != 0
    assert not [p for p in _processes_using(state) if "/shares/proj" in p]  # its virtiofsd went with it


def test_network_allowlist_and_off_from_inside_the_guest(qenv: VmEnv, servers: tuple[int, int]) -> None:
    network = qenv.services().network
    allowed, other = servers

    def curl(port: int) -> str:
        _code, out, err = run_in(qenv, NAME, "curl", "-sS", "-m", "20", f"http://{EGRESS_TEST_HOST}:{port}/")
        return out + err

    network.set_mode(name=NAME, mode="allowlist")
    network.allow(name=NAME, entry=f"127.0.0.1:{allowed}")
    assert curl(allowed) == f"hello from {allowed}\n"
    assert f"hello from {other}" not in curl(other)
    network.set_mode(name=NAME, mode="off")
    assert "hello" not in curl(allowed)
    # Without the proxy the guest reaches nothing: restrict=on (host loopback, slirp DNS).
    code, out, err = run_in(qenv, NAME, "sh", "-c", f"curl -sS -m 10 --noproxy '*' http://10.0.2.2:{allowed}/")
    assert code != 0 and "hello" not in out


def test_destroy_leaves_no_process_and_no_file(qenv: VmEnv) -> None:
    services = qenv.services()
    record = services.workspaces.record(name=NAME)
    state = qenv.paths.data_dir / "qemu" / record.domain
    storage = Path(record.storage_dir)
    assert state.is_dir() and storage.is_dir()
    services.workspaces.destroy(name=NAME, on_progress=_log)
    assert services.workspaces.list() == ()
    assert _processes_using(state, storage) == []  # no QEMU, no virtiofsd, no share view
    assert not state.exists() and not storage.exists()
    assert not qenv.paths.workspace_dir(NAME).exists()
