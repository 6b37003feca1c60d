"""Layers in the image store, through the services: a template's packages make a layer on
its base image, shared by every template of the same recipe and used by create.

The two builders are stand-ins that write small real qcow2 disks (the real ones need root, a
loop mount and the Debian mirror: tests/vm/test_layers.py builds one for real); the store,
its cache, its locks and its clean-up are the real ones.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agentbox.errors import InvalidInput, ToolFailed
from agentbox.images import store as store_module
from agentbox.images.debian_build import KERNEL_CMDLINE, BuiltImage
from agentbox.model.progress import CancelToken, Progress
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.services.images import ImageService

from .conftest import World


@dataclass
class Builders:
    bases: list[str] = field(default_factory=list)
    layers: list[tuple[Path, tuple[str, ...]]] = field(default_factory=list)  # (base disk, packages)
    fail_layer: bool = False


def _outputs(out_dir: Path, marker: bytes) -> BuiltImage:
    disk = out_dir / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "8M"], check=True)
    (out_dir / "vmlinuz").write_bytes(b"kernel " + marker)
    (out_dir / "initrd.img").write_bytes(b"initrd " + marker)
    return BuiltImage(disk=disk, disk_format="qcow2", kernel=out_dir / "vmlinuz",
                      initrd=out_dir / "initrd.img", cmdline=KERNEL_CMDLINE)


@pytest.fixture()
def builders(monkeypatch: pytest.MonkeyPatch) -> Builders:
    state = Builders()

    def build_base(*, recipe, out_dir: Path, on_progress, cancel) -> BuiltImage:  # type: ignore[no-untyped-def]
        state.bases.append(recipe.name)
        return _outputs(out_dir, b"base")

    def build_layer(*, recipe, base_disk: Path, out_dir: Path, on_progress, cancel) -> BuiltImage:  # type: ignore[no-untyped-def]
        on_progress(Progress(step="apt-get install", detail=", ".join(recipe.apt), index=4, total=7))
        if state.fail_layer:
            (out_dir / "disk.qcow2").write_bytes(b"half a disk")
            raise ToolFailed("apt-get failed (exit code 100):\n  E: Unable to locate package nosuchpkg")
        state.layers.append((base_disk, recipe.apt))
        return _outputs(out_dir, b"layer")

    monkeypatch.setattr(store_module, "check_build_prerequisites", lambda *, recipe: None)
    monkeypatch.setattr(store_module, "check_layer_prerequisites", lambda *, recipe: None)
    monkeypatch.setattr(store_module, "build_debian_image", build_base)
    monkeypatch.setattr(store_module, "build_layer_image", build_layer)
    return state


def _template(world: World, name: str, packages: str | None) -> None:
    text = f"name: {name}\nimage:\n  build: debian-12\n"
    if packages is not None:
        text += f"  packages: {packages}\n"
    (world.ctx.paths.user_templates_dir / f"{name}.yaml").write_text(text + "cloud_init:\n  fragments: [base.yaml]\n")


def _pull(world: World, template: str):  # type: ignore[no-untyped-def]
    return ImageService(ctx=world.ctx).pull(template=template, on_progress=world.progress.append,
                                            cancel=CancelToken())


def test_templates_with_the_same_packages_share_one_layer_on_one_base(world: World, builders: Builders) -> None:
    _template(world, "tools-a", "[jq, git]")
    _template(world, "tools-b", "[git, jq, git]")
    _template(world, "plain", None)

    layer = _pull(world, "tools-a")
    assert _pull(world, "tools-b") == layer  # same recipe, same image: no second build
    base = _pull(world, "plain")  # no packages: the base image itself, already built

    assert builders.bases == ["debian-12"] and len(builders.layers) == 1
    assert builders.layers[0] == (base.disk, ("git", "jq"))  # built from the cached base
    assert layer.image_id.startswith("debian-12-layer-") and base.image_id.startswith("debian-12-")
    assert (layer.base, layer.packages, layer.source) == (base.image_id, ("git", "jq"), f"layer:{base.image_id}")
    assert (base.base, base.packages) == (None, ())
    assert base.template == "debian-12"  # the base a layer built first is the recipe's, not tools-a's
    assert layer.kernel is not None and layer.kernel.read_bytes() == b"kernel layer"
    listed = {info.image_id: info for info in ImageService(ctx=world.ctx).list_images()}
    assert listed == {base.image_id: base, layer.image_id: layer}
    assert any(p.step == "apt-get install" and p.detail == "git, jq" for p in world.progress)


def test_changing_the_packages_makes_a_new_layer_and_keeps_the_old(world: World, builders: Builders) -> None:
    _template(world, "tools", "[jq]")
    first = _pull(world, "tools")
    _template(world, "tools", "[jq, git]")
    second = _pull(world, "tools")
    assert first.image_id != second.image_id
    assert {i.image_id for i in ImageService(ctx=world.ctx).list_images()} >= {first.image_id, second.image_id}
    assert builders.bases == ["debian-12"]  # the base is built once, for both


def test_a_failed_layer_build_leaves_no_layer_and_keeps_the_base(world: World, builders: Builders) -> None:
    _template(world, "broken", "[nosuchpkg]")
    builders.fail_layer = True
    with pytest.raises(ToolFailed, match="nosuchpkg"):
        _pull(world, "broken")
    [only] = ImageService(ctx=world.ctx).list_images()
    assert only.base is None and only.source == "build:debian-12"
    left = [p.name for p in world.ctx.settings.image_dir.iterdir() if not p.name.startswith(".lock-")]
    assert left == [only.image_id]  # no half-made layer, no .tmp directory

    builders.fail_layer = False  # the next try builds it, on the same base
    assert _pull(world, "broken").base == only.image_id
    assert builders.bases == ["debian-12"]


def test_create_boots_the_layer_and_cloud_init_installs_nothing(world: World, builders: Builders) -> None:
    _template(world, "tools", "[jq]")
    record = create_workspace(ctx=world.ctx, request=CreateRequest(name="ws", template="tools"),
                              on_progress=world.progress.append, cancel=CancelToken())
    layer = _pull(world, "tools")
    assert record.image_id == layer.image_id
    spec = world.backend.defined_spec("agentbox-ws")
    assert spec.kernel_boot is not None and spec.kernel_boot.kernel == layer.kernel
    seed = spec.disks[1].path.read_bytes()  # the ISO holds the user-data as it is
    assert b"#cloud-config" in seed and b"\npackages:" not in seed

    # The workspace's disk stands on the layer: removing it is refused; its base is not in use.
    images = ImageService(ctx=world.ctx)
    with pytest.raises(InvalidInput, match="ws"):
        images.remove(template="tools")
    _template(world, "plain", None)
    images.remove(template="plain")
    assert [i.image_id for i in images.list_images()] == [layer.image_id]  # a layer stands alone
