"""Checks on a disk before it enters the cache: its format, no backing file, its sha256."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from agentbox.errors import ImageError
from agentbox.images.tools import find_tool, run_tool
from agentbox.model.progress import CancelToken

_HASH_CHUNK = 1024 * 1024


def disk_name(disk_format: str) -> str:
    return "disk.qcow2" if disk_format == "qcow2" else "disk.img"


def probe_format(disk: Path, *, cancel: CancelToken) -> str:
    qemu_img = find_tool("qemu-img", package="qemu-utils")
    argv = [qemu_img, "info", "--output=json", str(disk)]
    out = run_tool(argv, cancel=cancel, capture_stdout=True)
    try:
        info = json.loads(out)
    except json.JSONDecodeError as exc:
        raise ImageError(f"qemu-img info gave unreadable output for {disk}") from exc
    disk_format = info.get("format")
    if disk_format not in ("qcow2", "raw"):
        raise ImageError(
            f"image {disk.name} is in format {disk_format!r}: "
            "only qcow2 and raw disks are supported",
            hint="point the template at a .qcow2 or .raw cloud image",
        )
    # A backing file or an external data file would let an image read arbitrary host files.
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise ImageError(f"image {disk.name} refers to a backing file: refused")
    specific = info.get("format-specific", {}).get("data", {})
    if isinstance(specific, dict) and specific.get("data-file"):
        raise ImageError(f"image {disk.name} refers to an external data file: refused")
    return disk_format


def sha256_file(path: Path, *, cancel: CancelToken) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
            cancel.raise_if_cancelled()
    return digest.hexdigest()
