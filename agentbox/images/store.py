"""The image cache: verified, read-only base disks, one directory per image.

`image_dir/<image_id>/` holds the disk, the kernel and initrd (built images) and
`image.json`. An image is assembled in `image_dir/.tmp-<image_id>-<random>/` and renamed
into place only when complete, so a directory with a valid `image.json` is always whole.
An fcntl lock per image (`image_dir/.lock-<image_id>`) makes a concurrent `ensure()` wait
and then reuse the result instead of building twice.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from agentbox.errors import AgentboxError, Busy, ConfigError, ImageError, NotFound, PermissionDenied
from agentbox.images.debian_build import (
    DebianRecipe,
    build_debian_image,
    check_build_prerequisites,
    recipe_for,
)
from agentbox.images.disk_checks import disk_name, probe_format, sha256_file
from agentbox.images.download import download_verified
from agentbox.images.layer_build import LayerRecipe, build_layer_image, check_layer_prerequisites, layer_recipe
from agentbox.images.record import IMAGE_JSON, ImageInfo, load_info, write_info
from agentbox.images.tools import remove_tree
from agentbox.model.progress import CancelToken, Progress, ProgressCallback
from agentbox.model.template import BuildRecipe, DownloadSource, Template

_TMP_PREFIX = ".tmp-"
_LOCK_PREFIX = ".lock-"
_KEY_HEX = 12
_LOCK_POLL_S = 0.5
_UNSAFE = re.compile(r"[^a-z0-9._-]+")
_LIST_HINT = "see the cached images with `agentbox image list`"


__all__ = ["ImageInfo", "ImageStore"]


class ImageStore:
    def __init__(self, *, image_dir: Path) -> None:
        self._dir = image_dir

    @property
    def image_dir(self) -> Path:
        return self._dir

    def image_id_for(self, *, template: Template) -> str:
        """Name plus a hash of what defines the image: a changed definition is a new image."""
        source = template.image
        layer = self._layer(template)
        if layer is not None:  # named for what it is, not for a template: templates share it
            return f"{_safe_name(layer.name)}-{layer.key()[:_KEY_HEX]}"
        if isinstance(source, BuildRecipe):
            recipe = self._recipe(template)
            return f"{_safe_name(recipe.name)}-{recipe.key()[:_KEY_HEX]}"
        spec = {"url": source.url, "sha256": source.sha256, "sha256_url": source.sha256_url}
        key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode("utf-8")).hexdigest()
        return f"{_safe_name(template.name)}-{key[:_KEY_HEX]}"

    def find(self, *, template: Template) -> ImageInfo | None:
        """The cached image for `template`, if a complete one exists."""
        return load_info(self._dir / self.image_id_for(template=template))

    def list_images(self) -> tuple[ImageInfo, ...]:
        try:
            entries = sorted(self._dir.iterdir())
        except FileNotFoundError:
            return ()
        found = (load_info(entry) for entry in entries if not entry.name.startswith("."))
        return tuple(info for info in found if info is not None)

    def remove(self, *, template: Template) -> ImageInfo:
        image_id = self.image_id_for(template=template)
        info = load_info(self._dir / image_id)
        if info is None:
            raise NotFound(f"no cached image for template {template.name!r}", hint=_LIST_HINT)
        try:
            with self._lock(image_id, cancel=None, on_progress=None):
                # Rename first: a remove killed half-way leaves only a .tmp dir to clean up.
                doomed = self._new_tmp_path(image_id)
                os.rename(info.directory, doomed)
                remove_tree(doomed)
        except PermissionError as exc:
            raise _no_write_access(self._dir, exc) from exc
        return info

    def ensure(
        self, *, template: Template, on_progress: ProgressCallback, cancel: CancelToken
    ) -> ImageInfo:
        """The cached image, or download/build it now. An unchanged definition is reused.

        A template with packages gets a layer: its base image first (cached, or built now),
        then the layer built from it.
        """
        image_id = self.image_id_for(template=template)
        cached = load_info(self._dir / image_id)
        if cached is not None:
            return cached
        recipe = self._recipe(template) if isinstance(template.image, BuildRecipe) else None
        layer = self._layer(template)
        base: ImageInfo | None = None
        if layer is not None:
            check_layer_prerequisites(recipe=layer)  # refuse before building the base too
            base = self.ensure(template=_without_packages(template), on_progress=on_progress, cancel=cancel)
        elif recipe is not None:
            check_build_prerequisites(recipe=recipe)  # refuse before touching anything
        try:
            self._create_image_dir()
            with self._lock(image_id, cancel=cancel, on_progress=on_progress):
                cached = load_info(self._dir / image_id)  # another process may have made it
                if cached is not None:
                    return cached
                self._clean_leftovers(locked_id=image_id)
                return self._make(
                    template=template,
                    image_id=image_id,
                    recipe=recipe,
                    layer=None if layer is None or base is None else (layer, base),
                    on_progress=on_progress,
                    cancel=cancel,
                )
        except PermissionError as exc:
            raise _no_write_access(self._dir, exc) from exc

    # -- making an image ---------------------------------------------------------------

    def _make(
        self,
        *,
        template: Template,
        image_id: str,
        recipe: DebianRecipe | None,
        layer: tuple[LayerRecipe, ImageInfo] | None,
        on_progress: ProgressCallback,
        cancel: CancelToken,
    ) -> ImageInfo:
        final = self._dir / image_id
        if os.path.lexists(final):
            # Incomplete (no valid image.json): never used, replaced.
            stale = self._new_tmp_path(image_id)
            os.rename(final, stale)
            remove_tree(stale)
        tmp = self._new_tmp_path(image_id)
        tmp.mkdir(mode=0o755)
        try:
            if layer is not None:
                info = self._build_layer(
                    template=template, image_id=image_id, recipe=layer[0], base=layer[1], tmp=tmp,
                    on_progress=on_progress, cancel=cancel,
                )
            elif recipe is not None:
                info = self._build(
                    template=template, image_id=image_id, recipe=recipe, tmp=tmp,
                    on_progress=on_progress, cancel=cancel,
                )
            else:
                assert isinstance(template.image, DownloadSource)
                info = self._download(
                    template=template, image_id=image_id, source=template.image, tmp=tmp,
                    on_progress=on_progress, cancel=cancel,
                )
            cancel.raise_if_cancelled()
            write_info(tmp / IMAGE_JSON, info)
            for entry in tmp.iterdir():
                entry.chmod(0o444)
            tmp.chmod(0o555)
            os.rename(tmp, final)
        except BaseException:
            remove_tree(tmp)
            raise
        loaded = load_info(final)
        if loaded is None:  # pragma: no cover - we just wrote it
            raise ImageError(f"image {image_id} was written but cannot be read back from {final}")
        return loaded

    def _download(
        self,
        *,
        template: Template,
        image_id: str,
        source: DownloadSource,
        tmp: Path,
        on_progress: ProgressCallback,
        cancel: CancelToken,
    ) -> ImageInfo:
        fetched = tmp / "download"
        digest = download_verified(
            url=source.url,
            dest=fetched,
            sha256=source.sha256,
            sha256_url=source.sha256_url,
            on_progress=on_progress,
            cancel=cancel,
        )
        on_progress(Progress(step="verify", detail="checking the disk format"))
        disk_format = probe_format(fetched, cancel=cancel)
        disk = tmp / disk_name(disk_format)
        os.rename(fetched, disk)
        return self._info(
            image_id=image_id, template=template, source=source.url, disk=disk,
            disk_format=disk_format, sha256=digest, kernel=None, initrd=None, cmdline=None,
        )

    def _build(
        self,
        *,
        template: Template,
        image_id: str,
        recipe: DebianRecipe,
        tmp: Path,
        on_progress: ProgressCallback,
        cancel: CancelToken,
    ) -> ImageInfo:
        built = build_debian_image(
            recipe=recipe, out_dir=tmp, on_progress=on_progress, cancel=cancel
        )
        on_progress(Progress(step="verify", detail="checking the disk and computing its sha256"))
        disk_format = probe_format(built.disk, cancel=cancel)
        if disk_format != built.disk_format:
            raise ImageError(
                f"built disk {built.disk} is {disk_format}, expected {built.disk_format}"
            )
        return self._info(
            image_id=image_id, template=template, source=f"build:{recipe.name}", disk=built.disk,
            disk_format=disk_format, sha256=sha256_file(built.disk, cancel=cancel),
            kernel=built.kernel, initrd=built.initrd, cmdline=built.cmdline,
        )

    def _build_layer(
        self,
        *,
        template: Template,
        image_id: str,
        recipe: LayerRecipe,
        base: ImageInfo,
        tmp: Path,
        on_progress: ProgressCallback,
        cancel: CancelToken,
    ) -> ImageInfo:
        built = build_layer_image(
            recipe=recipe, base_disk=base.disk, out_dir=tmp, on_progress=on_progress, cancel=cancel
        )
        on_progress(Progress(step="verify", detail="checking the disk and computing its sha256"))
        disk_format = probe_format(built.disk, cancel=cancel)
        info = self._info(
            image_id=image_id, template=template, source=f"layer:{base.image_id}", disk=built.disk,
            disk_format=disk_format, sha256=sha256_file(built.disk, cancel=cancel),
            kernel=built.kernel, initrd=built.initrd, cmdline=built.cmdline,
        )
        return replace(info, base=base.image_id, packages=recipe.apt,
                       npm=tuple(package.spec for package in recipe.npm),
                       pip=tuple(package.spec for package in recipe.pip))

    def _info(
        self,
        *,
        image_id: str,
        template: Template,
        source: str,
        disk: Path,
        disk_format: str,
        sha256: str,
        kernel: Path | None,
        initrd: Path | None,
        cmdline: str | None,
    ) -> ImageInfo:
        # Paths as they will be once the directory is renamed into place.
        final = self._dir / image_id
        return ImageInfo(
            image_id=image_id,
            template=template.name,
            source=source,
            directory=final,
            disk=final / disk.name,
            disk_format=disk_format,
            kernel=final / kernel.name if kernel else None,
            initrd=final / initrd.name if initrd else None,
            cmdline=cmdline,
            sha256=sha256,
            size_bytes=disk.stat().st_size,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    # -- housekeeping --------------------------------------------------------------------

    def _recipe(self, template: Template) -> DebianRecipe:
        assert isinstance(template.image, BuildRecipe)
        try:
            return recipe_for(name=template.image.recipe)
        except AgentboxError as exc:
            where = f" ({template.source})" if template.source else ""
            message = f"template {template.name!r}{where}: {exc.message}"
            raise ConfigError(message, hint=exc.hint) from exc

    def _layer(self, template: Template) -> LayerRecipe | None:
        """The layer a template's packages (Debian, npm, pip) make, or None: without any, the
        base is used."""
        if not isinstance(template.image, BuildRecipe) or not template.image.layered:
            return None
        try:
            return layer_recipe(base=self._recipe(template), apt=template.image.packages,
                                npm=template.image.npm, pip=template.image.pip)
        except AgentboxError as exc:
            where = f" ({template.source})" if template.source else ""
            raise ConfigError(f"template {template.name!r}{where}: {exc.message}", hint=exc.hint) from exc

    def _create_image_dir(self) -> None:
        # QEMU runs as libvirt-qemu under qemu:///system and must traverse every directory
        # down to the disks: each one created here gets 0755 whatever the umask.
        missing = [d for d in (self._dir, *self._dir.parents) if not d.exists()]
        for directory in reversed(missing):
            directory.mkdir(mode=0o755, exist_ok=True)
            directory.chmod(0o755)
        mode = self._dir.stat().st_mode & 0o7777
        if mode & 0o755 != 0o755 and self._dir.stat().st_uid == os.geteuid():
            self._dir.chmod(mode | 0o755)

    def _new_tmp_path(self, image_id: str) -> Path:
        return self._dir / f"{_TMP_PREFIX}{image_id}-{secrets.token_hex(4)}"

    def _clean_leftovers(self, *, locked_id: str) -> None:
        """Remove .tmp dirs of killed runs: those of `locked_id` (whose lock this process
        holds) and those of other images whose lock nobody holds."""
        for entry in self._dir.iterdir():
            if not entry.name.startswith(_TMP_PREFIX):
                continue
            image_id = entry.name[len(_TMP_PREFIX) :].rpartition("-")[0]
            if image_id == locked_id:
                remove_tree(entry)  # this process holds its lock: certainly dead
                continue
            try:
                with self._lock(image_id, cancel=None, on_progress=None):
                    remove_tree(entry)
            except Busy:
                continue  # another process is making that image right now
            except (OSError, ImageError):
                continue  # best effort: someone else's leftover must not block this image

    @contextmanager
    def _lock(
        self, image_id: str, *, cancel: CancelToken | None, on_progress: ProgressCallback | None
    ) -> Iterator[None]:
        """Hold the image's lock, waiting (cancellably) while another process has it.

        Without a cancel token a held lock raises Busy at once. flock locks belong to the
        open file, so this also excludes other threads of this process.
        """
        path = self._dir / f"{_LOCK_PREFIX}{image_id}"
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            announced = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise
                if cancel is None:
                    raise Busy(
                        f"image {image_id} is being prepared by another agentbox process",
                        hint="wait for it to finish, then try again",
                    )
                if not announced and on_progress is not None:
                    detail = f"another agentbox process is preparing {image_id}"
                    on_progress(Progress(step="wait", detail=detail))
                    announced = True
                cancel.wait(_LOCK_POLL_S)
            yield
        finally:
            os.close(fd)  # closing releases the lock


def _without_packages(template: Template) -> Template:
    """The base a layer is built on: the recipe's own image (named for it, not for the
    layer's template, which `image list` would otherwise show as the base's)."""
    assert isinstance(template.image, BuildRecipe)
    return replace(template, name=template.image.recipe, image=BuildRecipe(recipe=template.image.recipe))


def _safe_name(name: str) -> str:
    # The id is a directory name: keep it one harmless path component, never a dot-file.
    cleaned = _UNSAFE.sub("-", name.lower()).strip(".-")
    return cleaned or "image"


def _no_write_access(image_dir: Path, exc: PermissionError) -> PermissionDenied:
    return PermissionDenied(
        f"cannot write to the image directory {image_dir}: {exc.strerror or exc}",
        hint="build or download the image once as root (sudo agentbox image build ...), "
        "or choose an image directory you can write to",
    )
