"""Building the base image locally from Debian packages (debootstrap), DESIGN.md section 3.

The result is an ext4 file system image (no partition table, label `agentbox-root`)
converted to qcow2, plus the guest's kernel and initrd for direct kernel boot.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agentbox.errors import ImageError, InvalidInput, ToolFailed
from agentbox.images.tools import remove_tree, require_root_and_tools, run_tool
from agentbox.model.progress import CancelToken, Progress, ProgressCallback
from agentbox.model.template import is_debian_package_name

# Bump whenever the build steps below change the image in a way the recipe fields and
# guest files do not show: a new number makes every cached built image stale.
BUILD_VERSION = 1

MIRROR_ENV = "AGENTBOX_DEBIAN_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
ROOT_LABEL = "agentbox-root"
KERNEL_CMDLINE = f"root=LABEL={ROOT_LABEL} ro"  # the backend adds console=

DEFAULT_PACKAGES: tuple[str, ...] = (
    "linux-image-cloud-amd64",
    "systemd-sysv",
    # systemd-logind turns the ACPI power button into a clean shutdown, and needs D-Bus:
    # without it `agentbox stop` waits out its timeout and then pulls the plug.
    "dbus",
    "udev",
    "kmod",
    "e2fsprogs",
    "cloud-init",
    "openssh-server",
    "sudo",
    "ifupdown",
    "isc-dhcp-client",
    "iproute2",
    "netbase",
    "ca-certificates",
    "curl",
    "python3",
    # debootstrap's resolver misses this dependency of python3-cryptography (cloud-init),
    # which then stays unconfigured; naming it avoids the failure where possible.
    "python3-cffi-backend",
)

_BUILD_STEPS = 6
_CHROOT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
_PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


def _mirror_from_env() -> str:
    return os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR


@dataclass(frozen=True)
class DebianRecipe:
    """What a built image is made of. `mirror` says only where packages come from."""

    name: str
    suite: str = "bookworm"
    mirror: str = field(default_factory=_mirror_from_env)
    packages: tuple[str, ...] = DEFAULT_PACKAGES
    disk_size_gib: int = 3
    variant: str = "minbase"

    def guest_files(self) -> dict[str, str]:
        """Files written into the guest (path inside the guest → content)."""
        apt = "http://deb.debian.org/debian"
        return {
            "/etc/fstab": f"LABEL={ROOT_LABEL} / ext4 defaults 0 1\n",
            # NoCloud finds the seed disk by its `cidata` label; never probe cloud metadata.
            "/etc/cloud/cloud.cfg.d/90-agentbox.cfg": "datasource_list: [ NoCloud, None ]\n",
            "/etc/hostname": "localhost\n",
            "/etc/hosts": "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n",
            # The public mirror, not the build mirror: the image must not depend on where
            # it was built (and the mirror is not part of the recipe hash).
            "/etc/apt/sources.list": (
                f"deb {apt} {self.suite} main\n"
                f"deb {apt} {self.suite}-updates main\n"
                f"deb http://security.debian.org/debian-security {self.suite}-security main\n"
            ),
        }

    def key(self) -> str:
        """sha256 over everything that changes the built image (not the mirror)."""
        definition = {
            "build_version": BUILD_VERSION,
            "name": self.name,
            "suite": self.suite,
            "variant": self.variant,
            "packages": list(self.packages),
            "disk_size_gib": self.disk_size_gib,
            "root_label": ROOT_LABEL,
            "cmdline": KERNEL_CMDLINE,
            "guest_files": self.guest_files(),
        }
        canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


KNOWN_RECIPES: tuple[str, ...] = ("debian-12",)


def recipe_for(*, name: str) -> DebianRecipe:
    """The recipe called `name`, with the mirror taken from $AGENTBOX_DEBIAN_MIRROR."""
    if name == "debian-12":
        return DebianRecipe(name=name, suite="bookworm")
    raise InvalidInput(
        f"unknown image recipe {name!r}: known recipes are {', '.join(KNOWN_RECIPES)}",
        hint="use `image: {build: debian-12}` in the template",
    )


@dataclass(frozen=True)
class BuiltImage:
    disk: Path
    disk_format: str
    kernel: Path
    initrd: Path
    cmdline: str


def check_build_prerequisites(*, recipe: DebianRecipe) -> dict[str, str]:
    """Raise before any work if this process cannot build: root and the tools are needed;
    returns each tool's path."""
    return require_root_and_tools(
        needs_root=f"building the {recipe.name} image needs root (debootstrap creates device nodes and chroots)",
        hint=f"sudo agentbox image build {recipe.name}", tools=_tools())


def build_debian_image(
    *,
    recipe: DebianRecipe,
    out_dir: Path,
    on_progress: ProgressCallback,
    cancel: CancelToken,
) -> BuiltImage:
    """Build into `out_dir` (an existing empty directory): disk.qcow2, vmlinuz, initrd.img.

    Intermediate files (the root tree, the raw disk) go in `out_dir/work`, which is removed
    whatever happens, so `out_dir` should be on the file system the image will live on.
    """
    tools = check_build_prerequisites(recipe=recipe)
    for package in recipe.packages:
        if not is_debian_package_name(package):
            raise InvalidInput(f"recipe {recipe.name}: {package!r} is not a Debian package name")
    work = out_dir / "work"
    root = work / "root"
    try:
        work.mkdir(mode=0o755)
        root.mkdir(mode=0o755)
        step = BuildSteps(on_progress=on_progress, cancel=cancel, total=_BUILD_STEPS)

        step.next("debootstrap", f"installing {len(recipe.packages)} packages from {recipe.mirror}")
        debootstrap_error = _debootstrap(
            recipe=recipe, root=root, tools=tools, cancel=cancel, step=step
        )

        step.next("fix up packages", "configuring what debootstrap left unconfigured")
        _fix_up_packages(root=root, tools=tools, cancel=cancel, debootstrap_error=debootstrap_error)

        step.next("configure guest", "fstab, cloud-init datasource, host keys, machine-id")
        _configure_guest(recipe=recipe, root=root, tools=tools, cancel=cancel)

        step.next("extract kernel", "copying vmlinuz and initrd.img for direct kernel boot")
        kernel, initrd = extract_kernel(root=root, out_dir=out_dir)

        raw = work / "disk.raw"
        step.next("make file system", f"ext4 {recipe.disk_size_gib} GiB labelled {ROOT_LABEL}")
        os.chmod(root, 0o755)  # mke2fs -d copies it to the file system root
        size = f"{recipe.disk_size_gib}G"
        run_tool(
            [tools["mkfs.ext4"], "-q", "-L", ROOT_LABEL, "-d", str(root), str(raw), size],
            cancel=cancel,
        )

        built = finish_image(raw=raw, kernel=kernel, initrd=initrd, out_dir=out_dir, tools=tools, step=step,
                             cancel=cancel)
    except BaseException:
        remove_outputs(out_dir)
        raise
    finally:
        remove_tree(work)
    return built


def finish_image(*, raw: Path, kernel: Path, initrd: Path, out_dir: Path, tools: Mapping[str, str],
                 step: BuildSteps, cancel: CancelToken) -> BuiltImage:
    """A build's last step, base or layer: the raw disk converted to `out_dir/disk.qcow2`."""
    disk = out_dir / "disk.qcow2"
    step.next("convert to qcow2", disk.name)
    run_tool([tools["qemu-img"], "convert", "-O", "qcow2", str(raw), str(disk)], cancel=cancel)
    return BuiltImage(disk=disk, disk_format="qcow2", kernel=kernel, initrd=initrd, cmdline=KERNEL_CMDLINE)


def remove_outputs(out_dir: Path) -> None:
    """What a failed or cancelled build leaves in `out_dir` goes (its work tree is removed apart)."""
    for name in ("disk.qcow2", "vmlinuz", "initrd.img"):
        (out_dir / name).unlink(missing_ok=True)


class BuildSteps:
    """Numbered progress for a build; a cancel is honoured at every step boundary."""

    def __init__(self, *, on_progress: ProgressCallback, cancel: CancelToken, total: int) -> None:
        self._on_progress = on_progress
        self._cancel = cancel
        self._total = total
        self._index = 0
        self._name = ""

    def next(self, name: str, detail: str) -> None:
        self._cancel.raise_if_cancelled()
        self._index += 1
        self._name = name
        self.detail(detail)

    def detail(self, detail: str) -> None:
        self._on_progress(
            Progress(step=self._name, detail=detail, index=self._index, total=self._total)
        )


def _tools() -> tuple[tuple[str, str], ...]:
    return (
        ("debootstrap", "debootstrap"),
        ("mkfs.ext4", "e2fsprogs"),
        ("qemu-img", "qemu-utils"),
        ("chroot", "coreutils"),
    )


def build_env() -> dict[str, str]:
    """The environment of tools run in the image's tree: fixed, plus the host's proxy settings."""
    env = {
        "PATH": _CHROOT_PATH,
        "LC_ALL": "C",
        "HOME": "/root",
        "DEBIAN_FRONTEND": "noninteractive",
        "DEBCONF_NONINTERACTIVE_SEEN": "true",
    }
    env.update({name: os.environ[name] for name in _PROXY_VARS if name in os.environ})
    return env


def _debootstrap(
    *, recipe: DebianRecipe, root: Path, tools: Mapping[str, str], cancel: CancelToken, step: BuildSteps
) -> ToolFailed | None:
    """Run debootstrap; return its failure when the tree may still be fixable."""
    argv = [
        tools["debootstrap"],
        f"--variant={recipe.variant}",
        f"--include={','.join(recipe.packages)}",
        recipe.suite,
        str(root),
        recipe.mirror,
    ]
    try:
        run_tool(argv, cancel=cancel, env=build_env(), on_line=step.detail)
    except ToolFailed as exc:
        # Known: it exits non-zero when python3-cryptography stays unconfigured. Anything
        # before dpkg exists in the tree (download, signature, mirror errors) is fatal.
        if not (root / "usr/bin/dpkg").exists():
            hint = f"check the mirror {recipe.mirror} (set it with {MIRROR_ENV})"
            raise ToolFailed(exc.message, hint=hint) from exc
        return exc
    return None


def chroot_run(root: Path, tools: Mapping[str, str], *argv: str, cancel: CancelToken) -> str:
    argv_in = [tools["chroot"], str(root), *argv]
    return run_tool(argv_in, cancel=cancel, env=build_env(), capture_stdout=True)


def _fix_up_packages(
    *,
    root: Path,
    tools: Mapping[str, str],
    cancel: CancelToken,
    debootstrap_error: ToolFailed | None,
) -> None:
    policy = forbid_service_starts(root)
    try:
        if debootstrap_error is not None:
            chroot_run(root, tools, "apt-get", "install", "-y", "python3-cffi-backend", cancel=cancel)
        chroot_run(root, tools, "dpkg", "--configure", "-a", cancel=cancel)
        audit = chroot_run(root, tools, "dpkg", "--audit", cancel=cancel).strip()
    except ToolFailed as exc:
        if debootstrap_error is None:
            raise
        both = f"{debootstrap_error.message}\nand fixing it up failed: {exc.message}"
        raise ToolFailed(both) from exc
    finally:
        policy.unlink(missing_ok=True)
    if audit:
        raise ImageError(f"packages are still broken after the build:\n{audit}")


def forbid_service_starts(root: Path) -> Path:
    """Write the tree's policy-rc.d so no package starts a service on the host; the caller
    removes the returned file when done."""
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\n# no services start while the image is built\nexit 101\n")
    policy.chmod(0o755)
    return policy


def remove_apt_lists(root: Path) -> None:
    """The package lists are large and stale at once: the guest fetches its own."""
    lists = inside(root, "/var/lib/apt/lists")
    if lists.is_dir():
        for entry in lists.iterdir():
            remove_tree(entry)


def _configure_guest(
    *, recipe: DebianRecipe, root: Path, tools: Mapping[str, str], cancel: CancelToken
) -> None:
    for guest_path, content in recipe.guest_files().items():
        target = inside(root, guest_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)  # never write through a symlink in the tree
        target.write_text(content)
        target.chmod(0o644)
    # Every workspace gets its own host keys (through cloud-init) and machine-id.
    for key in inside(root, "/etc/ssh").glob("ssh_host_*"):
        key.unlink()
    machine_id = inside(root, "/etc/machine-id")
    machine_id.unlink(missing_ok=True)
    machine_id.touch(mode=0o444)
    inside(root, "/var/lib/dbus/machine-id").unlink(missing_ok=True)
    chroot_run(root, tools, "apt-get", "clean", cancel=cancel)
    remove_apt_lists(root)
    # debootstrap's leftovers: its log and scripts (after a failed run), the host's resolver.
    remove_tree(inside(root, "/debootstrap"))
    inside(root, "/etc/resolv.conf").unlink(missing_ok=True)


def inside(root: Path, guest_path: str) -> Path:
    return root / guest_path.lstrip("/")


def extract_kernel(*, root: Path, out_dir: Path) -> tuple[Path, Path]:
    boot = root / "boot"
    kernels = sorted(
        boot.glob("vmlinuz-*"), key=lambda p: _version_key(p.name.removeprefix("vmlinuz-"))
    )
    if not kernels:
        raise ImageError(
            f"the built tree has no kernel in {boot}",
            hint="is linux-image-cloud-amd64 in the recipe?",
        )
    version = kernels[-1].name.removeprefix("vmlinuz-")
    initrd_src = boot / f"initrd.img-{version}"
    if not initrd_src.is_file():
        raise ImageError(f"the built tree has no {initrd_src.name} for kernel {version}")
    kernel, initrd = out_dir / "vmlinuz", out_dir / "initrd.img"
    shutil.copyfile(kernels[-1], kernel)
    shutil.copyfile(initrd_src, initrd)
    kernel.chmod(0o444)
    initrd.chmod(0o444)
    return kernel, initrd


def _version_key(version: str) -> tuple[tuple[int, str], ...]:
    parts = re.split(r"[.-]", version)
    return tuple((int(part), "") if part.isdigit() else (-1, part) for part in parts)
