"""The read-back of a layer's npm/pip installs, on a real ext4 image read by debugfs (as the
build reads its written disk): files must be there and npm packages at their pinned version."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from agentbox.errors import ImageError
from agentbox.images.layer_build import _debugfs
from agentbox.images.registry_installs import InstalledFiles, check_readback
from agentbox.model.progress import CancelToken

MANIFEST = "/usr/local/lib/node_modules/@openai/codex/package.json"


@pytest.fixture()
def disk(tmp_path: Path) -> Path:
    if shutil.which("mkfs.ext4") is None or shutil.which("debugfs") is None:
        pytest.fail("needs e2fsprogs (mkfs.ext4, debugfs)")
    tree = tmp_path / "tree"
    manifest = tree / MANIFEST.lstrip("/")
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"name": "@openai/codex", "version": "0.171.0", "bin": {"codex": "bin/codex.js"}}))
    (tree / "usr/local/bin").mkdir(parents=True)
    (tree / "usr/local/bin/codex").symlink_to("../lib/node_modules/@openai/codex/bin/codex.js")
    raw = tmp_path / "disk.raw"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(raw), "16M"], check=True, capture_output=True)
    return raw


def _read(raw: Path):  # type: ignore[no-untyped-def]
    debugfs = shutil.which("debugfs")
    assert debugfs is not None
    return lambda requests: _debugfs(raw, requests, tools={"debugfs": debugfs}, cancel=CancelToken())


def test_what_was_installed_reads_back(disk: Path) -> None:
    installed = InstalledFiles(paths=(MANIFEST, "/usr/local/bin/codex"), versions=((MANIFEST, "0.171.0"),),
                               commands=("codex",))
    check_readback(installed=installed, read=_read(disk))


def test_a_missing_file_fails_the_build(disk: Path) -> None:
    installed = InstalledFiles(paths=(MANIFEST, "/usr/local/bin/claude"), versions=(), commands=("claude",))
    with pytest.raises(ImageError, match="lacks 1 of the 2 files"):
        check_readback(installed=installed, read=_read(disk))


def test_another_version_than_the_pinned_one_fails_the_build(disk: Path) -> None:
    installed = InstalledFiles(paths=(MANIFEST,), versions=((MANIFEST, "0.170.0"),), commands=())
    with pytest.raises(ImageError, match="names version '0.171.0', not the pinned 0.170.0"):
        check_readback(installed=installed, read=_read(disk))
