"""`agentbox image list` shows layers with their base and packages; bad package names are
refused with the template's file and line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agentbox.images.record import IMAGE_JSON, ImageInfo, write_info

from .test_cli_errors import run, user_template


def _cached(image_dir: Path, image_id: str, *, base: str | None, packages: tuple[str, ...],
            npm: tuple[str, ...] = (), pip: tuple[str, ...] = ()) -> None:
    directory = image_dir / image_id
    directory.mkdir(parents=True)
    disk = directory / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "8M"], check=True)
    write_info(directory / IMAGE_JSON, ImageInfo(
        image_id=image_id, template="tools", source=f"layer:{base}" if base else "build:debian-12",
        directory=directory, disk=disk, disk_format="qcow2", kernel=None, initrd=None, cmdline=None,
        sha256="0" * 64, size_bytes=disk.stat().st_size, created="2026-12-02T00:00:00+00:00",
        base=base, packages=packages, npm=npm, pip=pip))


def test_image_list_shows_each_layer_with_its_base_and_packages(agentbox_root: Path, capsys) -> None:
    image_dir = agentbox_root.parent / "images"
    _cached(image_dir, "debian-12-aaaaaaaaaaaa", base=None, packages=())
    _cached(image_dir, "debian-12-layer-bbbbbbbbbbbb", base="debian-12-aaaaaaaaaaaa", packages=("git", "jq"))
    _cached(image_dir, "debian-12-layer-cccccccccccc", base="debian-12-aaaaaaaaaaaa", packages=("nodejs", "npm"),
            npm=("@openai/codex@0.171.0",), pip=("aider-chat==0.86.2",))
    code, out, _ = run(["image", "list"], capsys)
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[:5] == ["IMAGE", "BASE", "PACKAGES", "INSTALLS", "SIZE"]
    assert rows[0].split()[:4] == ["debian-12-aaaaaaaaaaaa", "-", "-", "-"]
    assert rows[1].split()[:4] == ["debian-12-layer-bbbbbbbbbbbb", "debian-12-aaaaaaaaaaaa", "git,jq", "-"]
    assert rows[2].split()[:4] == ["debian-12-layer-cccccccccccc", "debian-12-aaaaaaaaaaaa", "nodejs,npm",
                                   "@openai/codex@0.171.0,aider-chat==0.86.2"]
    code, out, _ = run(["image", "list", "--json"], capsys)
    layer = [i for i in json.loads(out) if i["base"]]
    assert [(i["base"], i["packages"], i["npm"], i["pip"]) for i in layer] == [
        ("debian-12-aaaaaaaaaaaa", ["git", "jq"], [], []),
        ("debian-12-aaaaaaaaaaaa", ["nodejs", "npm"], ["@openai/codex@0.171.0"], ["aider-chat==0.86.2"])]


@pytest.mark.parametrize("bad", ["jq=1.6", "Vim", "--allow-unauthenticated"])
def test_a_bad_package_name_is_a_configuration_error_at_its_line(agentbox_root: Path, capsys, bad: str) -> None:
    text = f"name: tools\nimage:\n  build: debian-12\n  packages: [git, {bad!r}]\n"
    path = user_template(agentbox_root, "tools", text)
    code, _, err = run(["create", "ws", "--template", "tools"], capsys)
    assert code == 3
    assert f"{path}:4: image.packages[1]: {bad!r} is not a Debian package name" in err
