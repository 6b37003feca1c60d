"""libvirt's QEMU save image header, rewritten so one saved RAM state restores into many domains.

libvirt 9.0 refuses to restore a save image into a domain of another name or UUID, even
with a replacement XML (`virDomainRestoreFlags(dxml)` checks ABI stability, and name and
UUID are part of it: "Target domain name 'b' does not match source 'a'", measured here).
The image is libvirt's header and domain XML followed by QEMU's migration stream, which
holds no name, UUID, disk path or port. So agentbox writes the clone's own XML into the
header (libvirt leaves ~64 KiB of zero padding after it for exactly such rewrites, see
`virDomainSaveImageDefineXML`) and restores: libvirt then sees a save image of that very
domain. The stream itself is never copied or changed.

The layout (libvirt src/qemu/qemu_saveimage.h, virQEMUSaveHeader, little-endian on x86):
16 bytes magic, then uint32 version, data_len, was_running, compressed, cookieOffset and
unused words up to HEADER_SIZE; then data_len bytes: the XML (NUL-terminated) from 0 to
cookieOffset, the cookie, zero padding; then the stream.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from agentbox.errors import BackendError

MAGIC = b"LibvirtQemudSave"
HEADER_SIZE = 92  # measured on libvirt 9.0: the XML starts at byte 92
_FIELDS = struct.Struct("<5I")  # version, data_len, was_running, compressed, cookieOffset
SUPPORTED_VERSIONS = frozenset({2})


@dataclass(frozen=True)
class SaveHeader:
    version: int
    data_len: int
    was_running: bool
    compressed: int
    xml: str
    cookie: bytes


def read_header(path: Path) -> SaveHeader:
    with path.open("rb") as file:
        head = file.read(HEADER_SIZE)
        if len(head) < HEADER_SIZE or head[:len(MAGIC)] != MAGIC:
            raise BackendError(f"{path} is not a complete libvirt save image",
                               hint="remove it (agentbox image rm TEMPLATE); it is made again on next use")
        version, data_len, was_running, compressed, cookie_offset = _FIELDS.unpack_from(head, len(MAGIC))
        if version not in SUPPORTED_VERSIONS or compressed != 0:
            raise BackendError(f"{path}: save image version {version}, compression {compressed} is not supported")
        data = file.read(data_len)
    if len(data) != data_len or not 0 < cookie_offset <= data_len:
        raise BackendError(f"{path}: truncated save image header")
    xml = data[:cookie_offset].split(b"\0", 1)[0].decode("utf-8")
    cookie = data[cookie_offset:].split(b"\0", 1)[0]
    return SaveHeader(version=version, data_len=data_len, was_running=bool(was_running), compressed=compressed,
                      xml=xml, cookie=cookie)


def write_domain_xml(path: Path, *, xml: str) -> None:
    """Put `xml` into the header of the save image at `path`, in place (the stream stays).
    The caller serialises writers (one restore at a time per image)."""
    header = read_header(path)
    encoded = xml.encode("utf-8") + b"\0"
    cookie = header.cookie + b"\0" if header.cookie else b""
    if len(encoded) + len(cookie) > header.data_len:
        raise BackendError(f"{path}: the domain XML ({len(encoded)} bytes) does not fit the save image's header "
                           f"({header.data_len} bytes)")
    fields = _FIELDS.pack(header.version, header.data_len, int(header.was_running), header.compressed, len(encoded))
    data = (encoded + cookie).ljust(header.data_len, b"\0")
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        # One write of the fields and the data area: the magic and the stream are untouched.
        written = os.pwrite(fd, fields + _unused(path) + data, len(MAGIC))
        if written != HEADER_SIZE - len(MAGIC) + header.data_len:
            raise BackendError(f"{path}: short write while updating the save image header")
        os.fsync(fd)
    finally:
        os.close(fd)


def _unused(path: Path) -> bytes:
    with path.open("rb") as file:
        head = file.read(HEADER_SIZE)
    return head[len(MAGIC) + _FIELDS.size:HEADER_SIZE]
