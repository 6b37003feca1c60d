"""Layers: a cached base image plus packages installed on the host at build time.

A template's `packages:` cannot be installed by cloud-init (the guest has no way out while
it runs), so they are installed here, into a copy of the base image's file system: the
base disk is converted to raw, grown, loop-mounted, and `apt-get install` runs in a chroot
of it on the host, which reaches the Debian mirror. The result is a standalone image (no
backing file), cached like any other by its recipe's hash, so two templates with the same
base and packages share one image.

After apt, a recipe's pinned npm and pip installs run the same way (registry_installs.py):
they join the hash, and the Debian packages they need (nodejs and npm, python3-venv) join
its apt list.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from agentbox.errors import ImageError, InvalidInput, ToolFailed
from agentbox.images.debian_build import (
    DEFAULT_MIRROR,
    BuildSteps,
    BuiltImage,
    DebianRecipe,
    build_env,
    chroot_run,
    extract_kernel,
    finish_image,
    forbid_service_starts,
    inside,
    remove_apt_lists,
    remove_outputs,
)
from agentbox.images.private_mounts import in_private_mount_namespace
from agentbox.images.registry_installs import InstalledFiles, check_readback, implied_apt, install_from_registries
from agentbox.images.tools import find_tool, remove_tree, require_root_and_tools, run_tool
from agentbox.model.installs import NpmPackage, PipPackage
from agentbox.model.progress import CancelToken, ProgressCallback
from agentbox.model.template import DEBIAN_PACKAGE_RULE, is_debian_package_name

# Bump whenever the steps below change a layer in a way its recipe does not show: every
# cached layer then becomes stale (its key changes), the base images stay.
LAYER_VERSION = 1
LAYER_DISK_GIB = 4  # the file system's size while building; the qcow2 stays sparse
REGISTRY_DISK_GIB = 6  # with npm/pip installs: Node, the agents and their downloads fit

_LAYER_STEPS = 7
_BUILD_SOURCES = "/etc/apt/agentbox-build.list"  # in the tree, only while apt runs
_APT_OPTIONS = (
    "-q",
    f"-o=Dir::Etc::SourceList={_BUILD_SOURCES}",
    "-o=Dir::Etc::SourceParts=/nonexistent",  # only the build's sources, not the guest's
    "-o=APT::Install-Recommends=false",  # what the template lists and what it depends on
    "-o=Dpkg::Options::=--force-confdef",
    "-o=Dpkg::Options::=--force-confold",
)


@dataclass(frozen=True)
class LayerRecipe:
    """What a layer is made of. Make one with `layer_recipe`, which validates and sorts."""

    base: DebianRecipe
    apt: tuple[str, ...]  # Debian packages, sorted, without duplicates
    disk_size_gib: int = LAYER_DISK_GIB
    npm: tuple[NpmPackage, ...] = ()  # sorted by name, each pinned
    pip: tuple[PipPackage, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.base.name}-layer"

    def key(self) -> str:
        """sha256 over the base's recipe key, the packages and the layer build's version."""
        definition: dict[str, object] = {
            "layer_version": LAYER_VERSION,
            "base_key": self.base.key(),
            "apt": list(self.apt),
            "disk_size_gib": self.disk_size_gib,
        }
        # Only when present, so an apt-only layer keeps the id it had before npm/pip existed.
        if self.npm:
            definition["npm"] = [package.spec for package in self.npm]
        if self.pip:
            definition["pip"] = [package.spec for package in self.pip]
        canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def layer_recipe(
    *, base: DebianRecipe, apt: Iterable[str], npm: Iterable[NpmPackage] = (), pip: Iterable[PipPackage] = ()
) -> LayerRecipe:
    """The layer of `apt` packages (and npm/pip installs) on `base`; order and repeats do
    not matter, two versions of one npm or pip package are refused."""
    npm_packages = _one_version_each(npm, kind="npm")
    pip_packages = _one_version_each(pip, kind="pip")
    if not (set(apt) or npm_packages or pip_packages):
        raise InvalidInput("a layer needs at least one package", hint="without packages, use the base image")
    for package in set(apt):
        if not is_debian_package_name(package):
            raise InvalidInput(f"{package!r} is not {DEBIAN_PACKAGE_RULE}")
    packages = tuple(sorted(set(apt) | implied_apt(npm=npm_packages, pip=pip_packages)))
    size = REGISTRY_DISK_GIB if npm_packages or pip_packages else LAYER_DISK_GIB
    return LayerRecipe(base=base, apt=packages, disk_size_gib=max(size, base.disk_size_gib),
                       npm=npm_packages, pip=pip_packages)


_Pinned = TypeVar("_Pinned", NpmPackage, PipPackage)


def _one_version_each(packages: Iterable[_Pinned], *, kind: str) -> tuple[_Pinned, ...]:
    unique = sorted(set(packages))
    names = [package.name for package in unique]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise InvalidInput(f"{kind}: {', '.join(twice)} pinned to more than one version", hint="keep one version")
    return tuple(unique)


def check_layer_prerequisites(*, recipe: LayerRecipe) -> dict[str, str]:
    """Raise before any work if this process cannot build a layer: root and the tools;
    returns each tool's path."""
    return require_root_and_tools(
        needs_root=(f"building an image with packages ({', '.join(recipe.apt)}) needs root "
                    "(it loop-mounts the image and runs apt-get in a chroot)"),
        hint="run that agentbox command once with sudo; the image is cached after that", tools=_tools())


def build_layer_image(
    *,
    recipe: LayerRecipe,
    base_disk: Path,
    out_dir: Path,
    on_progress: ProgressCallback,
    cancel: CancelToken,
) -> BuiltImage:
    """Build into `out_dir` (an existing empty directory): disk.qcow2, vmlinuz, initrd.img.

    The raw copy and its mount point live in `out_dir/work`, which is unmounted and removed
    whatever happens; on failure the outputs are removed too. The mounts are made in a
    namespace of the build's own (private_mounts.py), never in the host's.
    """
    check_layer_prerequisites(recipe=recipe)
    return in_private_mount_namespace(
        lambda: _build(recipe=recipe, base_disk=base_disk, out_dir=out_dir, on_progress=on_progress, cancel=cancel),
        cancel=cancel)


def _build(
    *, recipe: LayerRecipe, base_disk: Path, out_dir: Path, on_progress: ProgressCallback, cancel: CancelToken
) -> BuiltImage:
    tools = {tool: find_tool(tool, package=package) for tool, package in _tools()}
    work = out_dir / "work"
    raw = work / "disk.raw"
    root = work / "root"
    device: str | None = None  # attached by us and not yet handed to the kernel's autoclear
    attached = ""
    mounted = False
    try:
        work.mkdir(mode=0o755)
        root.mkdir(mode=0o755)
        total = _LAYER_STEPS + (1 if recipe.npm or recipe.pip else 0)
        step = BuildSteps(on_progress=on_progress, cancel=cancel, total=total)

        step.next("copy base", f"{base_disk.parent.name} to a raw disk")
        run_tool([tools["qemu-img"], "convert", "-O", "raw", str(base_disk), str(raw)], cancel=cancel)

        step.next("grow", f"file system to {recipe.disk_size_gib} GiB")
        _grow(raw=raw, size_gib=recipe.disk_size_gib, tools=tools, cancel=cancel)

        step.next("mount", "loop-mounting the copy")
        _flush(raw)
        device = _attach(raw=raw, tools=tools, cancel=cancel)
        # noinit_itable: zeroing the base's lazily initialised inode tables is the guest's
        # work, not something to do (and copy into the image) while building.
        run_tool([tools["mount"], "-t", "ext4", "-o", "noinit_itable", device, str(root)], cancel=cancel)
        mounted = True
        _detach(device=device, tools=tools)  # mounted, so: detached by the kernel at umount
        attached = device
        device = None

        step.next("apt-get install", f"{len(recipe.apt)} package(s): {', '.join(recipe.apt)}")
        _install_apt(recipe=recipe, root=root, tools=tools, cancel=cancel, step=step)
        installed = InstalledFiles(paths=(), versions=(), commands=())
        if recipe.npm or recipe.pip:
            specs = [package.spec for package in recipe.npm] + [package.spec for package in recipe.pip]
            step.next("npm/pip install", ", ".join(specs))
            installed = install_from_registries(root=root, npm=recipe.npm, pip=recipe.pip, tools=tools,
                                                cancel=cancel, on_line=step.detail)

        step.next("extract kernel", "vmlinuz and initrd.img (a package may have changed them)")
        kernel, initrd = extract_kernel(root=root, out_dir=out_dir)

        step.next("unmount", "writing the file system back to the copy, checking the packages are in it")
        _check_backing(device=attached, raw=raw)
        # What the installs downloaded and deleted (npm's cache, pip's wheels) is still in the
        # copy's blocks: discarding free space punches it out of the raw file, so the qcow2
        # holds only what is installed.
        # (After a sync: blocks freed by deletions not yet committed are not discarded.)
        run_tool([tools["sync"], "--file-system", str(root)], cancel=cancel)
        run_tool([tools["fstrim"], str(root)], cancel=cancel)
        run_tool([tools["umount"], str(root)], cancel=cancel)
        mounted = False
        _flush(raw)
        _verify_installed(raw=raw, packages=recipe.apt, tools=tools, cancel=cancel)
        check_readback(installed=installed,
                       read=lambda requests: _debugfs(raw, requests, tools=tools, cancel=cancel))

        built = finish_image(raw=raw, kernel=kernel, initrd=initrd, out_dir=out_dir, tools=tools, step=step,
                             cancel=cancel)
    except BaseException:
        remove_outputs(out_dir)
        raise
    finally:
        if mounted:
            _unmount_quietly(root=root, tools=tools)
        if device is not None:
            _detach(device=device, tools=tools)
        remove_tree(work)  # lazily unmounts whatever is still mounted below it
    return built


def _tools() -> tuple[tuple[str, str], ...]:
    return (
        ("qemu-img", "qemu-utils"),
        ("e2fsck", "e2fsprogs"),
        ("resize2fs", "e2fsprogs"),
        ("mount", "mount"),
        ("umount", "mount"),
        ("losetup", "mount"),
        ("blockdev", "util-linux"),
        ("debugfs", "e2fsprogs"),
        ("chroot", "coreutils"),
        ("fstrim", "util-linux"),
        ("sync", "coreutils"),
    )


def _grow(*, raw: Path, size_gib: int, tools: Mapping[str, str], cancel: CancelToken) -> None:
    if raw.stat().st_size >= size_gib * 2**30:
        return
    run_tool([tools["qemu-img"], "resize", "-f", "raw", str(raw), f"{size_gib}G"], cancel=cancel)
    # resize2fs insists on a freshly checked file system; -p fixes nothing but trivia.
    run_tool([tools["e2fsck"], "-f", "-p", str(raw)], cancel=cancel)
    run_tool([tools["resize2fs"], str(raw)], cancel=cancel)


def _install_apt(
    *, recipe: LayerRecipe, root: Path, tools: Mapping[str, str], cancel: CancelToken, step: BuildSteps
) -> None:
    sources = inside(root, _BUILD_SOURCES)
    resolv = inside(root, "/etc/resolv.conf")
    placed_resolv = False
    policy = forbid_service_starts(root)
    try:
        sources.write_text(_build_sources(recipe.base))
        # The base image has no resolv.conf (the guest gets its own); apt needs the host's.
        if not os.path.lexists(resolv):
            shutil.copyfile("/etc/resolv.conf", resolv)
            placed_resolv = True
        run_tool(_in_chroot(root, tools, "apt-get", *_APT_OPTIONS, "update"),
                 cancel=cancel, env=build_env(), on_line=step.detail)
        try:
            run_tool(_in_chroot(root, tools, "apt-get", *_APT_OPTIONS, "install", "-y", *recipe.apt),
                     cancel=cancel, env=build_env(), on_line=step.detail)
        except ToolFailed as exc:
            raise ToolFailed(exc.message, hint="check the package names (apt-cache policy NAME on a "
                             f"Debian {recipe.base.suite} host) and the mirror {recipe.base.mirror}") from exc
        chroot_run(root, tools, "apt-get", "clean", cancel=cancel)
        audit = chroot_run(root, tools, "dpkg", "--audit", cancel=cancel).strip()
    finally:
        policy.unlink(missing_ok=True)
        sources.unlink(missing_ok=True)
        if placed_resolv:
            resolv.unlink(missing_ok=True)
        remove_apt_lists(root)
    if audit:
        raise ImageError(f"packages are broken after installing {', '.join(recipe.apt)}:\n{audit}")


def _build_sources(base: DebianRecipe) -> str:
    """Where the build's apt looks: the build mirror, and Debian's security archive when the
    mirror is Debian's own (a private mirror is trusted to carry what its owner wants)."""
    lines = [f"deb {base.mirror} {base.suite} main", f"deb {base.mirror} {base.suite}-updates main"]
    if base.mirror.rstrip("/") == DEFAULT_MIRROR:
        lines.append(f"deb {DEFAULT_MIRROR}-security {base.suite}-security main")
    return "\n".join(lines) + "\n"


def _in_chroot(root: Path, tools: Mapping[str, str], *argv: str) -> list[str]:
    return [tools["chroot"], str(root), *argv]


def _flush(raw: Path) -> None:
    # The raw copy is written by qemu-img and e2fsprogs, then by the loop device, then read
    # by debugfs and qemu-img: each starts on a file that is on disk, not half in writeback.
    fd = os.open(raw, os.O_RDWR | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _attach(*, raw: Path, tools: Mapping[str, str], cancel: CancelToken) -> str:
    """A loop device of our own for `raw` (never one that another process set up)."""
    out = run_tool([tools["losetup"], "--find", "--show", "--nooverlap", str(raw)], cancel=cancel,
                   capture_stdout=True)
    device = out.strip()
    if not re.fullmatch(r"/dev/loop[0-9]+", device):
        raise ImageError(f"losetup named no loop device for {raw} (it said {device!r})")
    _check_backing(device=device, raw=raw)
    # Seen here (6.x kernel): a loop device re-attached soon after its last use can still
    # serve blocks of the previous file from its cache. Every copy of the base has the
    # same file system UUID, so ext4 mounted the mix: apt saw the previous build's packages
    # as installed and the new copy lacked them. Dropping the device's cache prevents it.
    run_tool([tools["blockdev"], "--flushbufs", device], cancel=cancel)
    return device


def _check_backing(*, device: str, raw: Path) -> None:
    # Loop devices are shared by the whole host: make sure this one is still ours, so the
    # packages are written into our copy and nowhere else.
    backing = Path("/sys/block") / Path(device).name / "loop" / "backing_file"
    try:
        found = backing.read_text().strip()
    except OSError:
        found = ""
    if found != str(raw):
        raise ImageError(f"loop device {device} is not backed by {raw} (it is {found or 'detached'})",
                         hint="another process changed the loop device: build the image again")


def _detach(*, device: str, tools: Mapping[str, str]) -> None:
    # Only ever called while the device is certainly ours (attached and not yet unmounted):
    # a device the kernel has freed may already be someone else's. On a mounted device
    # this only marks it for detaching at the unmount, so a build killed while mounted
    # leaves no loop device behind once its mount goes (remove_tree unmounts it).
    try:
        run_tool([tools["losetup"], "--detach", device], cancel=CancelToken())
    except ToolFailed:
        pass


def _verify_installed(*, raw: Path, packages: tuple[str, ...], tools: Mapping[str, str], cancel: CancelToken) -> None:
    """Read the written copy back (debugfs, no mount): every package is installed and its
    files are there. A build that lost writes on the way must never be cached."""
    status = _debugfs(raw, ["cat /var/lib/dpkg/status"], tools=tools, cancel=cancel)
    installed = _installed_packages(status)
    missing = [name for name in packages if name not in installed]
    if missing:
        raise ImageError(f"the built disk does not have {', '.join(missing)} installed",
                         hint="build the image again; if it persists, report it")
    paths: list[str] = []
    for name in packages:
        listing = _debugfs(raw, [f"cat /var/lib/dpkg/info/{name}.list", f"cat /var/lib/dpkg/info/{name}:amd64.list"],
                           tools=tools, cancel=cancel)
        # Only below /usr and /etc (the top-level /bin, /lib ... are symlinks into /usr), and
        # only names debugfs reads as one argument.
        paths += [line for line in listing.splitlines()
                  if line.startswith(("/usr/", "/etc/")) and not re.search(r'[\s"\\]', line)]
    if not paths:
        return
    out = _debugfs(raw, [f"stat {path}" for path in paths], tools=tools, cancel=cancel)
    found = out.count("Inode: ")
    if found != len(paths):
        raise ImageError(f"the built disk lacks {len(paths) - found} of the {len(paths)} files of "
                         f"{', '.join(packages)}", hint="build the image again; if it persists, report it")


def _debugfs(raw: Path, requests: list[str], *, tools: Mapping[str, str], cancel: CancelToken) -> str:
    commands = raw.parent / "debugfs.cmds"
    commands.write_text("".join(f"{request}\n" for request in requests))
    try:
        return run_tool([tools["debugfs"], "-f", str(commands), str(raw)], cancel=cancel, capture_stdout=True)
    finally:
        commands.unlink(missing_ok=True)


def _installed_packages(status: str) -> set[str]:
    names = set()
    for stanza in status.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[0].isspace())
        if fields.get("Status") == "install ok installed" and "Package" in fields:
            names.add(fields["Package"])
    return names


def _unmount_quietly(*, root: Path, tools: Mapping[str, str]) -> None:
    # On the way out of a failure (or a cancel, so with a token of its own): remove_tree's
    # lazy unmount covers whatever this cannot do.
    try:
        run_tool([tools["umount"], str(root)], cancel=CancelToken())
    except (ToolFailed, OSError):
        pass
