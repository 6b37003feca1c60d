"""A template's packages, installed at image build as a layer on the cached debian-12 image.

The layer is built for real (loop mount, apt-get in a chroot, from the Debian mirror) and
kept in the shared image dir under its recipe hash, so a rerun reuses it; one guest is booted
from it to show the package works inside, with the network off.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentbox.errors import ToolFailed
from agentbox.images.debian_build import recipe_for
from agentbox.images.layer_build import build_layer_image, layer_recipe
from agentbox.images.record import ImageInfo
from agentbox.images.tools import mounts_below, remove_tree
from agentbox.model.progress import CancelToken, Progress

from .conftest import VmEnv, _log, quiet, run_in

TEMPLATE = "jq-tools"
GUEST = "layered"


def _debugfs(raw: Path, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, str(raw)], check=True, capture_output=True, text=True).stdout


def _raw_copy(disk: Path, into: Path) -> Path:
    raw = into / "look.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(disk), str(raw)], check=True)
    return raw


def _installed(raw: Path) -> set[str]:
    status = _debugfs(raw, "cat /var/lib/dpkg/status")
    names = set()
    for stanza in status.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " ")
        if fields.get("Status") == "install ok installed":
            names.add(fields["Package"])
    return names


def _loops_under(path: Path) -> list[str]:
    """Loop devices whose backing file is below `path` (deleted ones included)."""
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            if backing.read_text().startswith(str(path)):
                found.append(backing.parent.parent.name)
        except OSError:
            continue  # detached meanwhile
    return found


@pytest.fixture(scope="module")
def work_dir(vm_env: VmEnv) -> Iterator[Path]:
    # The session's storage, on the image dir's file system like a real build's work.
    path = vm_env.storage / "layers"
    path.mkdir()
    yield path
    remove_tree(path)


@pytest.fixture(scope="module")
def layer(vm_env: VmEnv) -> ImageInfo:
    vm_env.paths.user_templates_dir.mkdir(parents=True, exist_ok=True)
    (vm_env.paths.user_templates_dir / f"{TEMPLATE}.yaml").write_text(
        f"name: {TEMPLATE}\ndescription: debian-12 with jq\n"
        "image:\n  build: debian-12\n  packages: [jq]\n"
        "resources: {vcpus: 2, memory_mib: 1024, disk_gib: 8}\n"
        "cloud_init:\n  fragments: [base.yaml]\n"
    )
    return vm_env.services().images.pull(template=TEMPLATE, on_progress=_log, cancel=CancelToken())


def _base(vm_env: VmEnv) -> ImageInfo:
    # By what it is: a base built first for a layer was labelled with the layer's template.
    [base] = [i for i in vm_env.services().images.list_images() if i.source == "build:debian-12" and i.base is None]
    return base


def test_a_layer_build_installs_the_packages_into_a_copy_of_the_base(vm_env: VmEnv, work_dir: Path) -> None:
    # Built here every run (seconds), not through the cache, so the build itself is tested.
    base = _base(vm_env)
    out = work_dir / "build"
    out.mkdir()
    progress: list[Progress] = []
    built = build_layer_image(recipe=layer_recipe(base=recipe_for(name="debian-12"), apt=["jq"]),
                              base_disk=base.disk, out_dir=out, on_progress=progress.append, cancel=CancelToken())
    assert sorted(p.name for p in out.iterdir()) == ["disk.qcow2", "initrd.img", "vmlinuz"]  # work/ is gone
    assert [p.step for p in progress if p.index == p.total][-1] == "convert to qcow2"
    assert any(p.step == "apt-get install" and "jq" in p.detail for p in progress)
    raw = _raw_copy(built.disk, work_dir)
    installed = _installed(raw)
    assert {"jq", "libjq1", "openssh-server", "cloud-init"} <= installed
    assert "Type: regular" in _debugfs(raw, "stat /usr/bin/jq")
    # Nothing of the build is left in the guest: no package lists, no build sources, no
    # host resolver, no policy-rc.d that would stop services from starting in the guest.
    for gone in ("/etc/apt/agentbox-build.list", "/etc/resolv.conf", "/usr/sbin/policy-rc.d"):
        assert "File not found" in subprocess.run(["debugfs", "-R", f"stat {gone}", str(raw)],
                                                  capture_output=True, text=True).stderr, gone
    listed = [line.split("/")[5] for line in _debugfs(raw, "ls -p /var/lib/apt/lists").splitlines()
              if line.startswith("/")]
    assert set(listed) <= {".", ".."}
    assert mounts_below(work_dir) == [] and _loops_under(work_dir) == []
    raw.unlink()


def test_a_layer_that_cannot_be_built_leaves_nothing(vm_env: VmEnv, work_dir: Path) -> None:
    out = work_dir / "broken"
    out.mkdir()
    with pytest.raises(ToolFailed) as failure:
        build_layer_image(recipe=layer_recipe(base=recipe_for(name="debian-12"), apt=["agentbox-no-such-package"]),
                          base_disk=_base(vm_env).disk, out_dir=out, on_progress=quiet, cancel=CancelToken())
    assert "agentbox-no-such-package" in failure.value.message
    assert list(out.iterdir()) == [] and mounts_below(work_dir) == [] and _loops_under(work_dir) == []


def test_the_layer_is_cached_under_its_recipe_and_listed(vm_env: VmEnv, layer: ImageInfo) -> None:
    base = _base(vm_env)
    assert (layer.base, layer.packages) == (base.image_id, ("jq",))
    assert layer.image_id.startswith("debian-12-layer-")
    again = vm_env.services().images.pull(template=TEMPLATE, on_progress=quiet, cancel=CancelToken())
    assert again == layer  # the recipe is unchanged: reused, not rebuilt


def test_a_workspace_from_the_template_has_the_package(vm_env: VmEnv, layer: ImageInfo) -> None:
    vm_env.create(GUEST, template=TEMPLATE)
    try:
        code, out, err = run_in(vm_env, GUEST, "jq", "--version")
        assert code == 0, err
        assert out.startswith("jq-1.")
        code, out, _ = run_in(vm_env, GUEST, "sh", "-c", "echo '{\"a\": [1, 2]}' | jq -c .a")
        assert (code, out.strip()) == (0, "[1,2]")
        record = vm_env.context().records.load(name=GUEST)
        assert record is not None and record.image_id == layer.image_id
    finally:
        vm_env.services().workspaces.destroy(name=GUEST, on_progress=quiet)
