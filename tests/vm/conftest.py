"""Real guests on libvirt qemu:///system (TCG here).

The debian-12 image is built once per recipe and cached in the shared image dir outside
the checkout; each test session gets its own agentbox root, storage dir and domain-name
prefix, so it never sees or touches anyone else's workspaces. One guest is booted per
session and shared by the tests of a module, which run in order.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentbox.bootstrap import Services, build_context, build_services
from agentbox.errors import Busy
from agentbox.config.paths import ROOT_ENV, SYSTEM_STORAGE_DIR, AppPaths
from agentbox.model.progress import CancelToken, Progress
from agentbox.services.context import ServiceContext
from agentbox.services.create import CreateRequest

TEST_STORAGE_ROOT = Path("/var/lib/libvirt/images/agentbox-tests")
SHARED_IMAGE_DIR = SYSTEM_STORAGE_DIR / "images"  # the cache, keyed by recipe hash
EGRESS_TEST_HOST = "web.agentbox.test"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/vm/" in str(item.fspath):
            item.add_marker(pytest.mark.vm)
            item.add_marker(pytest.mark.timeout(1800))


def _log(progress: Progress) -> None:
    print(f"[{progress.index}/{progress.total}] {progress.step}: {progress.detail}", flush=True)


class VmEnv:
    """One isolated agentbox installation for a test session."""

    def __init__(self, *, root: Path, storage: Path, prefix: str, boot_timeout_s: int = 900) -> None:
        self.root = root
        self.storage = storage
        self.prefix = prefix
        self.paths = AppPaths.under(root=root)
        self.paths.config_dir.mkdir(parents=True, exist_ok=True)
        self.paths.settings_file.write_text(
            "libvirt_uri: qemu:///system\n"
            f"storage_dir: {storage}\n"
            f"image_dir: {SHARED_IMAGE_DIR}\n"
            f"domain_prefix: {prefix}\n"
            f"boot_timeout_s: {boot_timeout_s}\n"
            # The egress tests' servers listen on the host's 127.0.0.1; the guest asks for them
            # by this name (its own 127.0.0.1 bypasses the proxy through no_proxy).
            f"egress_hosts:\n  {EGRESS_TEST_HOST}: 127.0.0.1\n"
        )

    def context(self) -> ServiceContext:
        return build_context(paths=self.paths)

    def services(self) -> Services:
        return build_services(ctx=self.context())

    def create(self, name: str, **kwargs: object) -> None:
        self.services().create.create(request=CreateRequest(name=name, **kwargs),  # type: ignore[arg-type]
                                      on_progress=_log, cancel=CancelToken())

    def cli_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(ROOT_ENV, str(self.root))


def make_env(tmp_root: Path, *, boot_timeout_s: int = 900) -> VmEnv:
    run = uuid.uuid4().hex[:6]
    storage = TEST_STORAGE_ROOT / run
    storage.mkdir(parents=True, exist_ok=True)
    return VmEnv(root=tmp_root, storage=storage, prefix=f"abtest-{run}-", boot_timeout_s=boot_timeout_s)


def cleanup_env(env: VmEnv) -> None:
    """Destroy whatever the session left (by our prefix only), then its storage."""
    services = env.services()
    for workspace in services.workspaces.list():
        deadline = time.monotonic() + 120
        while True:  # a session timer may still be resetting it
            try:
                services.workspaces.destroy(name=workspace.name, on_progress=lambda _: None)
                break
            except Busy:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    shutil.rmtree(env.storage, ignore_errors=True)


SHARED = "shared"


def quiet(_: Progress) -> None:
    """Progress sink for calls whose progress a test does not look at."""


def cli_process(env: VmEnv, *argv: str) -> subprocess.Popen[str]:
    """`agentbox ARGV` as a process of its own, to be killed or raced; its progress is on stderr."""
    return subprocess.Popen([sys.executable, "-m", "agentbox", *argv], env={**os.environ, ROOT_ENV: str(env.root)},
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_until(process: subprocess.Popen[str], prefix: str) -> list[str]:
    """The stderr lines of `process` up to the first that starts with `prefix`; fails if it ends first."""
    assert process.stderr is not None
    lines: list[str] = []
    while not (lines and lines[-1].startswith(prefix)):
        line = process.stderr.readline()
        if not line:
            process.wait()
            pytest.fail(f"agentbox ended (exit {process.returncode}) before {prefix!r}: {''.join(lines)}")
        lines.append(line)
    return lines


def domain_names() -> list[str]:
    """Every domain on qemu:///system, whoever made it (read only)."""
    out = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                         check=True, capture_output=True, text=True).stdout
    return [line for line in out.split() if line]


def run_in(env: VmEnv, name: str, *argv: str, timeout_s: float | None = 120) -> tuple[int, str, str]:
    out, err = bytearray(), bytearray()
    result = env.services().workspaces.exec(name=name, argv=list(argv), stdout=out.extend, stderr=err.extend)
    return result.exit_code, out.decode(), err.decode()


@pytest.fixture(scope="session")
def vm_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    if os.geteuid() != 0:
        pytest.fail("the vm tests need root (they build the image and use qemu:///system)")
    env = make_env(tmp_path_factory.mktemp("agentbox-vm"))
    services = env.services()
    services.images.pull(template="debian-12", on_progress=_log, cancel=CancelToken())
    yield env
    cleanup_env(env)


@pytest.fixture(scope="session")
def shared_workspace(vm_env: VmEnv) -> str:
    """The one guest the session boots; tests get it through `clean_workspace`. A warm clone
    of the debian-12 golden state, as users get with `create --warm`: the reset, share,
    network, receipt and session tests all run on a clone (the cold path has guests of its
    own: test_agents, test_layers, test_failed_create)."""
    vm_env.create(SHARED, warm=True)
    return SHARED


@pytest.fixture()
def clean_workspace(vm_env: VmEnv, shared_workspace: str) -> str:
    """The shared workspace, reset to its clean snapshot by the product's own reset, with an
    empty outbox: the outbox survives resets by design, so one test's results would otherwise
    be in the next one's. So does the network policy: each test starts from off and an empty
    allowlist."""
    services = vm_env.services()
    services.snapshots.reset(name=shared_workspace, on_progress=_log, cancel=CancelToken())
    services.outbox.clear(name=shared_workspace)
    services.network.set_mode(name=shared_workspace, mode="off")
    for entry in services.network.policy(name=shared_workspace).render():
        services.network.deny(name=shared_workspace, entry=entry)
    return shared_workspace
