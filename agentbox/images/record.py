"""The record of a cached image: `image.json` beside the disk, and reading it back.

A directory counts as an image only when its record is readable, names the directory,
and the files it lists are there with the recorded disk size.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

IMAGE_JSON = "image.json"


@dataclass(frozen=True)
class ImageInfo:
    image_id: str  # e.g. "debian-12-3f2a9c1b7e4d": recipe/template name + 12 hex of its key
    template: str  # the template it was first made for
    source: str  # "build:debian-12" or the URL
    directory: Path
    disk: Path  # read-only (0444)
    disk_format: str  # "qcow2" or "raw", probed by qemu-img
    kernel: Path | None  # direct kernel boot for built images; None for cloud images
    initrd: Path | None
    cmdline: str | None  # without console=
    sha256: str  # of the disk file
    size_bytes: int
    created: str  # ISO 8601 UTC
    # A layer (a base image plus packages installed at build) names its base image's id and
    # what it installed; a base image has neither. Records from before layers read as bases.
    base: str | None = None
    packages: tuple[str, ...] = ()  # Debian packages
    npm: tuple[str, ...] = ()  # pinned specs, NAME@X.Y.Z
    pip: tuple[str, ...] = ()  # pinned specs, NAME==X.Y.Z


def write_info(path: Path, info: ImageInfo) -> None:
    fields = dataclasses.asdict(info).items()
    data = {key: str(value) if isinstance(value, Path) else value for key, value in fields}
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(data, stream, indent=2, sort_keys=True)
        stream.write("\n")
        stream.flush()
        os.fsync(stream.fileno())


def load_info(directory: Path) -> ImageInfo | None:
    """The image in `directory`, or None unless it is complete and consistent."""
    try:
        raw = json.loads((directory / IMAGE_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None

    # Paths are rebuilt from file names, so a moved image directory still works.
    def here(key: str) -> Path | None:
        value = raw[key]
        return None if value is None else directory / Path(str(value)).name

    try:
        disk = here("disk")
        if disk is None:
            return None
        info = ImageInfo(
            image_id=str(raw["image_id"]),
            template=str(raw["template"]),
            source=str(raw["source"]),
            directory=directory,
            disk=disk,
            disk_format=str(raw["disk_format"]),
            kernel=here("kernel"),
            initrd=here("initrd"),
            cmdline=None if raw["cmdline"] is None else str(raw["cmdline"]),
            sha256=str(raw["sha256"]),
            size_bytes=int(raw["size_bytes"]),
            created=str(raw["created"]),
            base=None if raw.get("base") is None else str(raw["base"]),
            packages=_names(raw.get("packages", [])),
            npm=_names(raw.get("npm", [])),
            pip=_names(raw.get("pip", [])),
        )
    except (KeyError, TypeError, ValueError):
        return None
    if info.image_id != directory.name:
        return None
    for needed in (info.disk, info.kernel, info.initrd):
        if needed is not None and not needed.is_file():
            return None
    if info.disk.stat().st_size != info.size_bytes:
        return None
    return info


def _names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TypeError("packages must be a list of strings")
    return tuple(value)
