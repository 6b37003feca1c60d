"""The save image header rewrite that lets one saved RAM state restore into many domains."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from agentbox.backends.libvirt.save_image import HEADER_SIZE, MAGIC, read_header, write_domain_xml
from agentbox.errors import BackendError

STREAM = b"QEVM\x00\x00\x00\x03" + bytes(range(256)) * 64


def _image(path: Path, *, xml: bytes, cookie: bytes, data_len: int = 4096) -> None:
    data = (xml + b"\0" + cookie + b"\0").ljust(data_len, b"\0")
    fields = struct.pack("<5I", 2, data_len, 1, 0, len(xml) + 1)
    path.write_bytes(MAGIC + fields + b"\0" * (HEADER_SIZE - len(MAGIC) - len(fields)) + data + STREAM)


def test_the_new_domain_xml_replaces_the_old_and_the_stream_stays(tmp_path: Path) -> None:
    path = tmp_path / "memory.save"
    _image(path, xml=b"<domain><name>golden</name></domain>", cookie=b"<cookie/>")
    size = path.stat().st_size
    write_domain_xml(path, xml="<domain><name>a-much-longer-clone-name</name></domain>")
    header = read_header(path)
    assert header.xml == "<domain><name>a-much-longer-clone-name</name></domain>"
    assert header.cookie == b"<cookie/>" and header.was_running and header.data_len == 4096
    assert path.stat().st_size == size and path.read_bytes().endswith(STREAM)


def test_an_xml_too_large_for_the_header_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    path = tmp_path / "memory.save"
    _image(path, xml=b"<domain/>", cookie=b"<cookie/>", data_len=64)
    before = path.read_bytes()
    with pytest.raises(BackendError, match="does not fit"):
        write_domain_xml(path, xml="<domain>" + "x" * 100 + "</domain>")
    assert path.read_bytes() == before


def test_a_file_that_is_no_save_image_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "memory.save"
    path.write_bytes(b"not a save image" * 10)
    with pytest.raises(BackendError, match="not a complete libvirt save image"):
        read_header(path)
