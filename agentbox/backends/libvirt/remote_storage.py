"""Disks on a remote libvirt host: volumes in a storage pool there, never local paths.

agentbox makes every disk file here (the seed, copy disks) or has it in its image store;
on a `qemu+ssh://` host each becomes a volume of the pool named by the setting
`remote_pool`, uploaded over libvirt's own connection (virStorageVol.upload with a stream)
and checked by reading it back: the SHA-256 of what the host stores must be the SHA-256 of
the local file, or the volume is deleted and the step fails. Image files (base disks,
kernels) are cached there under their image id (the recipe hash), each with a companion
`NAME.sha256` volume written only after the check passed, so a half-done upload is never
taken for a cached image. Per-domain volumes are named `DOMAIN-FILE` (the local file's
directory is the domain's); `delete_domain` removes every one of them.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import libvirt

from agentbox.backends.libvirt.errors import translate
from agentbox.errors import BackendError, NotFound

_CHUNK = 1 << 20
CHECKSUM_SUFFIX = ".sha256"


class RemoteStorage:
    def __init__(self, *, connection: Callable[[], libvirt.virConnect], pool: str, uri: str) -> None:
        self._connection = connection
        self._pool_name = pool
        self._uri = uri

    # --- names ---------------------------------------------------------------------------

    @staticmethod
    def volume_name(local: Path) -> str:
        """`DIR-FILE`: the workspace's domain dir or the image id, then the file."""
        return f"{local.parent.name}-{local.name}"

    def path_of(self, local: Path) -> str | None:
        """The remote path of `local`'s volume, None if it has none."""
        volume = self._volume(self.volume_name(local))
        return None if volume is None else volume.path()

    # --- images: uploaded once, cached by image id ------------------------------------------

    def ensure_image_file(self, local: Path) -> str:
        """The remote path of an image file (base disk, kernel, initrd), uploading it if the
        host has no verified copy."""
        name = self.volume_name(local)
        digest = _sha256_of_file(local)
        volume, marker = self._volume(name), self._volume(name + CHECKSUM_SUFFIX)
        if volume is not None and marker is not None and self._read(marker).decode(errors="replace") == digest:
            return volume.path()
        for stale in (marker, volume):  # a half-done or unverified upload
            if stale is not None:
                self._delete(stale)
        path = self.upload(local=local, name=name, digest=digest)
        self._upload_bytes(name=name + CHECKSUM_SUFFIX, data=digest.encode())
        return path

    # --- per-domain volumes -------------------------------------------------------------------

    def upload(self, *, local: Path, name: str | None = None, digest: str | None = None) -> str:
        """Upload `local` as volume `name` (replacing one of that name); verified by reading
        it back. Returns its remote path."""
        name = name or self.volume_name(local)
        existing = self._volume(name)
        if existing is not None:
            self._delete(existing)
        size = local.stat().st_size
        volume = self._create(name=name, capacity=size)
        try:
            sent = self._send(volume=volume, local=local, size=size)
            stored = self._sha256_of_volume(volume, size=size)
            if stored != (digest or sent):
                raise BackendError(
                    f"the upload of {local} to {self._uri} ({volume.path()}) does not match: sha256 {stored}"
                    f" there, {digest or sent} here",
                    hint="the connection or the remote disk corrupted it; try again")
        except BaseException:
            self._delete(volume)
            raise
        return volume.path()

    def create_overlay(self, *, local: Path, backing: Path, backing_format: str, size_gib: int) -> str:
        """A qcow2 volume for `local` on the host, on the cached copy of `backing`."""
        backing_path = self.ensure_image_file(backing)
        name = self.volume_name(local)
        if self._volume(name) is not None:
            raise BackendError(f"volume {name} already exists on {self._uri}",
                               hint="agentbox destroy removes a workspace's volumes")
        root = ET.Element("volume")
        ET.SubElement(root, "name").text = name
        ET.SubElement(root, "capacity", {"unit": "G"}).text = str(size_gib)
        target = ET.SubElement(root, "target")
        ET.SubElement(target, "format", {"type": "qcow2"})
        store = ET.SubElement(root, "backingStore")
        ET.SubElement(store, "path").text = backing_path
        ET.SubElement(store, "format", {"type": backing_format})
        try:
            return str(self._pool().createXML(ET.tostring(root, encoding="unicode"), 0).path())
        except libvirt.libvirtError as err:
            raise translate(err, action=f"create volume {name} on {self._uri}") from None

    def delete(self, local: Path) -> None:
        volume = self._volume(self.volume_name(local))
        if volume is not None:
            self._delete(volume)

    def delete_domain(self, *, domain: str) -> None:
        """Every volume of `domain` (`DOMAIN-*`): disks, seed, copy disks, console log."""
        pool = self._pool()
        try:
            pool.refresh(0)  # the console log is made by virtlogd, outside the pool's view
            names = pool.listVolumes()
        except libvirt.libvirtError as err:
            raise translate(err, action=f"list the volumes of pool {self._pool_name} on {self._uri}") from None
        for name in names:
            if name.startswith(f"{domain}-"):
                volume = self._volume(name)
                if volume is not None:
                    self._delete(volume)

    def console_log(self, *, domain: str) -> str:
        return f"{self.pool_dir()}/{domain}-console.log"

    def pool_dir(self) -> str:
        path = ET.fromstring(self._pool().XMLDesc(0)).findtext("./target/path")
        if not path:
            raise BackendError(f"storage pool {self._pool_name} on {self._uri} has no target directory",
                               hint="use a pool of type dir")
        return path

    # --- libvirt ------------------------------------------------------------------------------

    def _pool(self) -> libvirt.virStoragePool:
        try:
            pool = self._connection().storagePoolLookupByName(self._pool_name)
            if not pool.isActive():
                pool.create(0)
            return pool
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
                raise NotFound(
                    f"the remote libvirt host {self._uri} has no storage pool {self._pool_name!r}",
                    hint=f"create it there: virsh -c '{self._uri}' pool-define-as {self._pool_name} dir"
                    f" --target /var/lib/libvirt/images/{self._pool_name} && virsh -c '{self._uri}'"
                    f" pool-build {self._pool_name} && virsh -c '{self._uri}' pool-start {self._pool_name};"
                    " or name another with the setting remote_pool") from None
            raise translate(err, action=f"open storage pool {self._pool_name} on {self._uri}") from None

    def _volume(self, name: str) -> libvirt.virStorageVol | None:
        try:
            return self._pool().storageVolLookupByName(name)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return None
            raise translate(err, action=f"look up volume {name} on {self._uri}") from None

    def _create(self, *, name: str, capacity: int) -> libvirt.virStorageVol:
        root = ET.Element("volume")
        ET.SubElement(root, "name").text = name
        ET.SubElement(root, "capacity", {"unit": "bytes"}).text = str(capacity)
        ET.SubElement(ET.SubElement(root, "target"), "format", {"type": "raw"})  # our bytes, as they are
        try:
            return self._pool().createXML(ET.tostring(root, encoding="unicode"), 0)
        except libvirt.libvirtError as err:
            raise translate(err, action=f"create volume {name} on {self._uri}") from None

    def _delete(self, volume: libvirt.virStorageVol) -> None:
        try:
            volume.delete(0)
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise translate(err, action=f"delete volume {volume.name()} on {self._uri}") from None

    def _send(self, *, volume: libvirt.virStorageVol, local: Path, size: int) -> str:
        """Stream `local` into `volume`; the SHA-256 of the bytes sent."""
        digest = hashlib.sha256()
        stream = self._connection().newStream(0)
        try:
            volume.upload(stream, 0, size, 0)
            with local.open("rb") as source:
                def chunk(_stream: libvirt.virStream, nbytes: int, _opaque: object) -> bytes:
                    data = source.read(min(nbytes, _CHUNK))
                    digest.update(data)
                    return data
                stream.sendAll(chunk, None)
            stream.finish()
        except libvirt.libvirtError as err:
            _abort(stream)
            raise translate(err, action=f"upload {local} to {self._uri}") from None
        except OSError as exc:
            _abort(stream)
            raise BackendError(f"cannot read {local} for the upload: {exc.strerror}") from None
        return digest.hexdigest()

    def _sha256_of_volume(self, volume: libvirt.virStorageVol, *, size: int) -> str:
        digest = hashlib.sha256()
        stream = self._connection().newStream(0)
        try:
            volume.download(stream, 0, size, 0)
            stream.recvAll(lambda _stream, data, _opaque: digest.update(data), None)
            stream.finish()
        except libvirt.libvirtError as err:
            _abort(stream)
            raise translate(err, action=f"read back volume {volume.name()} from {self._uri}") from None
        return digest.hexdigest()

    def _read(self, volume: libvirt.virStorageVol) -> bytes:
        data = bytearray()
        stream = self._connection().newStream(0)
        try:
            volume.download(stream, 0, 0, 0)
            stream.recvAll(lambda _stream, chunk, _opaque: data.extend(chunk), None)
            stream.finish()
        except libvirt.libvirtError as err:
            _abort(stream)
            raise translate(err, action=f"read volume {volume.name()} from {self._uri}") from None
        return bytes(data)

    def _upload_bytes(self, *, name: str, data: bytes) -> None:
        volume = self._create(name=name, capacity=len(data))
        stream = self._connection().newStream(0)
        try:
            volume.upload(stream, 0, len(data), 0)
            stream.send(data)
            stream.finish()
        except libvirt.libvirtError as err:
            _abort(stream)
            self._delete(volume)
            raise translate(err, action=f"write volume {name} on {self._uri}") from None


def _abort(stream: libvirt.virStream) -> None:
    try:
        stream.abort()
    except libvirt.libvirtError:
        pass  # already broken: nothing more to release


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as source:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise BackendError(f"cannot read {path}: {exc.strerror}") from None
    return digest.hexdigest()
