"""Shared fixtures: an isolated agentbox root per test, and a libvirt test-driver world."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentbox.config.paths import ROOT_ENV
from agentbox.config.settings import URI_ENV
from agentbox.host import bind_mounts

EMPTY_NODE = """<node>
  <domain type='test'>
    <name>someone-elses-vm</name>
    <memory>65536</memory>
    <os><type>hvm</type></os>
  </domain>
</node>
"""


@pytest.fixture(autouse=True)
def _no_mount_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """A workspace made on this host has a real loop-mounted outbox (and maybe read-only bind
    mounts): whatever a test did not destroy, unmount it, so no mount outlives its test."""
    yield
    tmp_path = request.node.funcargs.get("tmp_path") if hasattr(request.node, "funcargs") else None
    if isinstance(tmp_path, Path):
        for mountpoint in reversed(bind_mounts.leftover_mounts(under=tmp_path, keep=())):
            bind_mounts.unmount(mountpoint)


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A small folder to share (tests/vm has its own, with a link pointing out of it)."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "readme.md").write_text("hello\n")
    return folder


@pytest.fixture()
def agentbox_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """AGENTBOX_ROOT for commands run through main(argv), on the libvirt test driver."""
    root = tmp_path / "agentbox"
    node = tmp_path / "node.xml"
    node.write_text(EMPTY_NODE)
    (root / "config").mkdir(parents=True)
    (root / "config" / "settings.yaml").write_text(
        f"storage_dir: {tmp_path / 'storage'}\nimage_dir: {tmp_path / 'images'}\n")
    monkeypatch.setenv(ROOT_ENV, str(root))
    monkeypatch.setenv(URI_ENV, f"test://{node}")
    monkeypatch.delenv("AGENTBOX_ACCEL", raising=False)
    yield root
