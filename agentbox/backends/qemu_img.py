"""Disk files through `qemu-img`, shared by every backend that runs QEMU (libvirt or not)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from agentbox.backends.base import check_overlay_args
from agentbox.errors import AlreadyExists, BackendError, ImageError, InvalidInput, PermissionDenied, ToolFailed

_GIB = 1024**3


def create_overlay(*, path: Path, backing: Path, backing_format: str, size_gib: int) -> None:
    """A new qcow2 at `path` (0600) whose reads fall through to `backing` (never written)."""
    check_overlay_args(backing_format=backing_format, size_gib=size_gib)
    if not backing.is_file():
        raise ImageError(f"backing image {backing} does not exist", hint="fetch or build the image again")
    if path.exists():
        raise AlreadyExists(f"disk {path} already exists")
    backing_bytes = virtual_size(backing, backing_format)
    if backing_bytes > size_gib * _GIB:
        raise InvalidInput(
            f"a {size_gib} GiB disk is smaller than its image {backing} ({backing_bytes / _GIB:.1f} GiB)"
        )
    argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", backing_format]
    # An absolute backing path: a relative one would be stored relative to the overlay.
    argv += ["-b", str(backing.resolve()), str(path), f"{size_gib}G"]
    try:
        run(argv)
        # The overlay holds whatever the guest writes.
        os.chmod(path, 0o600)
    except BaseException:
        path.unlink(missing_ok=True)  # did not exist before (checked above)
        raise


def export_disk(*, source: Path, target: Path, base: Path, base_format: str) -> None:
    """`source`'s current state (not its internal snapshots) as a new qcow2 overlay on `base`:
    only what differs from `base` is copied. `source` must not be in use."""
    if target.exists():
        raise AlreadyExists(f"disk {target} already exists")
    argv = ["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2", "-F", base_format,
            "-B", str(base.resolve()), str(source), str(target)]
    try:
        run(argv)
        os.chmod(target, 0o600)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def delete_volume(*, path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except PermissionError as exc:
        raise PermissionDenied(f"cannot delete disk {path}: {exc.strerror}") from None
    except OSError as exc:
        raise BackendError(f"cannot delete disk {path}: {exc.strerror}") from None


def virtual_size(image: Path, image_format: str) -> int:
    # -U: reading the size must work while a running guest holds the image.
    out = run(["qemu-img", "info", "-U", "--output=json", "-f", image_format, str(image)])
    try:
        return int(json.loads(out)["virtual-size"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ImageError(f"cannot read the size of image {image}: {exc}") from None


def run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise ToolFailed(f"{argv[0]} is not installed", hint="install qemu-utils") from None
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip() or f"exit status {exc.returncode}"
        raise ToolFailed(f"{argv[0]} {argv[1]} failed: {detail}") from None
    return done.stdout
