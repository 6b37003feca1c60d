"""The NoCloud seed: a small ISO 9660 image labelled `cidata` holding the cloud-init files.

It is attached to the guest as a read-only virtio disk (the Debian cloud kernel has no
AHCI, see DESIGN.md section 3); NoCloud finds it by its label on any block device.
"""

from __future__ import annotations

import io
from pathlib import Path

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from agentbox.config.atomic_file import write_atomically
from agentbox.errors import AgentboxError, PermissionDenied

VOLUME_ID = "cidata"

# (ISO 9660 level-3 name, Rock Ridge / Joliet name). Linux reads the Rock Ridge names.
_USER_DATA = ("/USER_DATA.;1", "user-data")
_META_DATA = ("/META_DATA.;1", "meta-data")
_NETWORK_CONFIG = ("/NETWORK_CONFIG.;1", "network-config")


def write_seed_iso(*, path: Path, user_data: str, meta_data: str, network_config: str | None = None) -> None:
    """Write the seed ISO to `path`, replacing it atomically.

    The file is created 0600: the user-data holds the guest's private host key.
    """
    files = [(_USER_DATA, user_data), (_META_DATA, meta_data)]
    if network_config is not None:
        files.append((_NETWORK_CONFIG, network_config))
    image = _build_iso(files=files)
    try:
        write_atomically(path=path, data=image)
    except PermissionError as exc:
        raise PermissionDenied(f"cannot write the cloud-init seed {path}: {exc.strerror}") from None
    except OSError as exc:
        raise AgentboxError(f"cannot write the cloud-init seed {path}: {exc.strerror or exc}") from None


def _build_iso(*, files: list[tuple[tuple[str, str], str]]) -> bytes:
    iso = pycdlib.PyCdlib()
    try:
        iso.new(interchange_level=3, vol_ident=VOLUME_ID, joliet=3, rock_ridge="1.09")
        for (iso_path, name), text in files:
            data = text.encode("utf-8")
            iso.add_fp(io.BytesIO(data), len(data), iso_path, rr_name=name, joliet_path=f"/{name}")
        out = io.BytesIO()
        iso.write_fp(out)
        return out.getvalue()
    except PyCdlibException as exc:
        raise AgentboxError(f"cannot build the cloud-init seed image: {exc}") from None
    finally:
        iso.close()
