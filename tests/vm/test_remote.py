"""A workspace on a remote libvirt host: `qemu+ssh://root@127.0.0.1:PORT/system` through
libvirt's real SSH transport, to an sshd of the tests' own (tests/vm/own_sshd.py).

"Remote" is this machine, so what makes it remote is checked where it shows: the disks
are volumes of the remote pool (another directory than the local storage dir, so the
upload really runs), SSH reaches the guest only through the jump, the egress forward too,
and destroy leaves neither domain nor volume there. One guest.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from agentbox.cli.main import main
from agentbox.errors import InvalidInput
from agentbox.model.progress import CancelToken
from agentbox.model.shares import ShareMechanism
from agentbox.stores.ssh_config import alias, jump_alias

from .conftest import EGRESS_TEST_HOST, TEST_STORAGE_ROOT, VmEnv, _log, cleanup_env, run_in
from .own_sshd import OwnSshd, start_sshd, stop_sshd
from .test_network import HelloHandler

REMOTE_POOL_ROOT = Path("/var/lib/libvirt/images/agentbox-remote-test")
NAME = "far"


def virsh(uri: str, *argv: str, check: bool = True) -> str:
    result = subprocess.run(["virsh", "-c", uri, *argv], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"virsh {' '.join(argv)}: {result.stderr}")
    return result.stdout


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnSshd]:
    own = start_sshd(directory=tmp_path_factory.mktemp("own-sshd"))
    yield own
    stop_sshd(own)


@pytest.fixture(scope="module")
def remote(sshd: OwnSshd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VmEnv, str]]:
    """An agentbox installation whose libvirt is "remote", with a pool of its own there."""
    run = uuid.uuid4().hex[:6]
    pool, pool_dir = f"abremote-{run}", REMOTE_POOL_ROOT / run
    virsh(sshd.uri, "pool-create-as", pool, "dir", "--target", str(pool_dir), "--build")
    storage = TEST_STORAGE_ROOT / run
    storage.mkdir(parents=True, exist_ok=True)
    env = VmEnv(root=tmp_path_factory.mktemp("agentbox-remote"), storage=storage, prefix=f"abremote-{run}-")
    with env.paths.settings_file.open("a") as settings:
        settings.write(f"remote_pool: {pool}\n")
    text = env.paths.settings_file.read_text().replace("libvirt_uri: qemu:///system", f"libvirt_uri: '{sshd.uri}'")
    env.paths.settings_file.write_text(text)
    env.services().images.pull(template="debian-12", on_progress=_log, cancel=CancelToken())
    try:
        yield env, pool
    finally:
        try:
            cleanup_env(env)
        finally:
            virsh(sshd.uri, "pool-destroy", pool, check=False)
            shutil.rmtree(pool_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    """An HTTP server on the user's machine's 127.0.0.1, reached from the guest only through
    the egress proxy here and its forward through the jump."""
    made = ThreadingHTTPServer(("127.0.0.1", 0), HelloHandler)
    threading.Thread(target=made.serve_forever, daemon=True).start()
    yield made.server_address[1]
    made.shutdown()


def pool_volumes(uri: str, pool: str) -> list[str]:
    virsh(uri, "pool-refresh", pool)
    return [line.split()[0] for line in virsh(uri, "vol-list", pool).splitlines()[2:] if line.strip()]


def test_create_puts_every_disk_in_the_remote_pool(remote: tuple[VmEnv, str], sshd: OwnSshd) -> None:
    env, pool = remote
    env.create(NAME)
    domain = f"{env.prefix}{NAME}"
    xml = ET.fromstring(virsh(sshd.uri, "dumpxml", domain))
    pool_dir = str(REMOTE_POOL_ROOT)
    sources = [s.get("file", "") for s in xml.iterfind("./devices/disk/source")]
    assert sources and all(source.startswith(pool_dir) for source in sources), sources
    assert (xml.findtext("./os/kernel") or "").startswith(pool_dir)
    volumes = pool_volumes(sshd.uri, pool)
    record = env.context().records.load(name=NAME)
    assert record is not None and record.remote_uri == sshd.uri
    image = record.image_id
    # The image is cached there under its id, with the checksum that vouched for it.
    assert {f"{image}-disk.qcow2", f"{image}-disk.qcow2.sha256", f"{domain}-disk.qcow2",
            f"{domain}-seed.img", f"{domain}-console.log"} <= set(volumes), volumes
    assert not any(env.storage.rglob("disk.qcow2")), "the root disk must not be in the local storage dir"


def test_exec_goes_through_the_jump(remote: tuple[VmEnv, str]) -> None:
    env, _ = remote
    assert run_in(env, NAME, "uname", "-n")[0] == 0


def test_ssh_config_jumps_through_the_libvirt_host(remote: tuple[VmEnv, str]) -> None:
    env, _ = remote
    config = env.context().records.files(name=NAME).ssh_config
    assert f"ProxyJump {jump_alias(NAME)}" in config.read_text()
    done = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", alias(NAME), "echo", "jumped"],
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (0, "jumped\n"), done.stderr


def test_live_shares_are_refused_with_the_reason(remote: tuple[VmEnv, str]) -> None:
    env, _ = remote
    choices = {c.mechanism: c for c in env.services().shares.mechanisms(domain=f"{env.prefix}{NAME}")}
    live = choices[ShareMechanism.VIRTIOFS_RO_BIND]
    assert not live.available and "remote libvirt host" in live.reason
    assert choices[ShareMechanism.COPY_DISK].available


def test_a_share_is_an_uploaded_copy_disk(remote: tuple[VmEnv, str], sshd: OwnSshd, tmp_path: Path) -> None:
    env, pool = remote
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "notes.txt").write_text("from the user's machine\n")
    with pytest.raises(InvalidInput) as refused:
        env.services().shares.add(name=NAME, source=str(folder), tag="live", mechanism="virtiofs-ro-bind")
    assert "remote libvirt host" in str(refused.value) + str(refused.value.hint)
    added = env.services().shares.add(name=NAME, source=str(folder), tag="proj")
    assert added.share.mechanism is ShareMechanism.COPY_DISK
    assert run_in(env, NAME, "cat", "/mnt/shares/proj/notes.txt")[1] == "from the user's machine\n"
    assert f"{env.prefix}{NAME}-share-proj.img" in pool_volumes(sshd.uri, pool)


def test_allowlist_reaches_the_users_machine_and_off_blocks(remote: tuple[VmEnv, str], server: int,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    env, _ = remote
    env.cli_env(monkeypatch)
    assert main(["net", NAME, "allowlist"]) == 0
    assert main(["net", "allow", NAME, f"127.0.0.1:{server}"]) == 0
    url = f"http://{EGRESS_TEST_HOST}:{server}/"
    code, out, err = run_in(env, NAME, "curl", "-sS", "-m", "20", url)
    assert (code, out) == (0, f"hello from {server}\n"), err
    assert last_decision(env, server).allowed  # decided here, by the proxy on the user's machine
    assert main(["net", NAME, "off"]) == 0
    code, out, _ = run_in(env, NAME, "curl", "-sS", "-m", "20", url)
    assert "hello" not in out
    assert not last_decision(env, server).allowed


def last_decision(env: VmEnv, port: int):  # type: ignore[no-untyped-def]
    [record] = [r for r in env.services().network.records(name=NAME) if r.port == port][-1:]
    return record.decision


def test_reset_drops_the_canary(remote: tuple[VmEnv, str]) -> None:
    env, _ = remote
    assert run_in(env, NAME, "sh", "-c", "echo canary > ~/canary")[0] == 0
    env.services().snapshots.reset(name=NAME, on_progress=_log, cancel=CancelToken())
    code, _, _ = run_in(env, NAME, "sh", "-c", "test -e ~/canary")
    assert code == 1
    assert run_in(env, NAME, "true")[0] == 0


def test_destroy_leaves_nothing_on_the_remote_host(remote: tuple[VmEnv, str], sshd: OwnSshd) -> None:
    env, pool = remote
    domain = f"{env.prefix}{NAME}"
    env.services().workspaces.destroy(name=NAME, on_progress=_log)
    assert domain not in virsh(sshd.uri, "list", "--all", "--name").split()
    assert not [v for v in pool_volumes(sshd.uri, pool) if v.startswith(domain)]

