"""The NoCloud seed ISO, read back with pycdlib."""

from __future__ import annotations

import io
import shutil
import stat
import subprocess
from pathlib import Path

import pycdlib
import pytest

from agentbox.errors import AgentboxError
from agentbox.provision.seed import VOLUME_ID, write_seed_iso

USER_DATA = "#cloud-config\nhostname: demo\nruncmd:\n- echo héllo\n"
META_DATA = "instance-id: agentbox-demo-1\nlocal-hostname: demo\n"
NETWORK_CONFIG = "version: 2\nethernets: {}\n"


def _read(iso: pycdlib.PyCdlib, **where: str) -> str:
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, **where)
    return out.getvalue().decode("utf-8")


def _open(path: Path) -> pycdlib.PyCdlib:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    return iso


def test_seed_has_label_and_files(tmp_path: Path) -> None:
    path = tmp_path / "seed.iso"
    write_seed_iso(path=path, user_data=USER_DATA, meta_data=META_DATA)
    iso = _open(path)
    try:
        assert iso.pvd.volume_identifier.decode().rstrip() == VOLUME_ID == "cidata"
        assert iso.has_rock_ridge()
        assert iso.has_joliet()
        # Rock Ridge names are what Linux (and so cloud-init) sees.
        assert _read(iso, rr_path="/user-data") == USER_DATA
        assert _read(iso, rr_path="/meta-data") == META_DATA
        assert _read(iso, joliet_path="/user-data") == USER_DATA
        names = sorted(
            child.rock_ridge.name().decode()
            for child in iso.list_children(rr_path="/")
            if child.rock_ridge is not None and child.is_file()
        )
        assert names == ["meta-data", "user-data"]
    finally:
        iso.close()


def test_seed_with_network_config(tmp_path: Path) -> None:
    path = tmp_path / "seed.iso"
    write_seed_iso(path=path, user_data=USER_DATA, meta_data=META_DATA, network_config=NETWORK_CONFIG)
    iso = _open(path)
    try:
        assert _read(iso, rr_path="/network-config") == NETWORK_CONFIG
    finally:
        iso.close()


def test_seed_is_private_and_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "seed.iso"
    path.write_text("old")
    path.chmod(0o644)
    write_seed_iso(path=path, user_data=USER_DATA, meta_data=META_DATA)
    # The user-data holds the guest's private host key.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["seed.iso"]
    iso = _open(path)
    iso.close()


def test_unwritable_destination_is_an_agentbox_error(tmp_path: Path) -> None:
    with pytest.raises(AgentboxError, match="cannot write the cloud-init seed"):
        write_seed_iso(path=tmp_path / "missing-dir" / "seed.iso", user_data=USER_DATA, meta_data=META_DATA)


@pytest.mark.skipif(shutil.which("blkid") is None, reason="blkid not installed")
def test_blkid_sees_the_cidata_label(tmp_path: Path) -> None:
    # NoCloud looks the seed up by file-system label, the way blkid reports it.
    path = tmp_path / "seed.iso"
    write_seed_iso(path=path, user_data=USER_DATA, meta_data=META_DATA)
    found = subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", "LABEL", str(path)], capture_output=True, text=True, check=False
    )
    assert found.stdout.strip() == "cidata"
