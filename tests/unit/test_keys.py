"""Key generation: OpenSSH formats, file permissions, and agreement with ssh-keygen."""

from __future__ import annotations

import base64
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agentbox.errors import InvalidInput
from agentbox.provision.keys import KeyPair, generate_ed25519, write_private_key


def test_generate_ed25519_formats() -> None:
    pair = generate_ed25519(comment="agentbox-demo")
    assert pair.private_openssh.startswith("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    assert pair.private_openssh.rstrip().endswith("-----END OPENSSH PRIVATE KEY-----")
    kind, blob, comment = pair.public_openssh.split(" ")
    assert kind == "ssh-ed25519"
    assert comment == "agentbox-demo"
    assert base64.b64decode(blob)[4:15] == b"ssh-ed25519"
    assert "\n" not in pair.public_openssh


def test_private_and_public_halves_belong_together() -> None:
    pair = generate_ed25519(comment="c")
    key = serialization.load_ssh_private_key(pair.private_openssh.encode(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert pair.public_openssh == public.decode() + " c"


def test_each_call_makes_a_new_key() -> None:
    assert generate_ed25519(comment="x").public_openssh != generate_ed25519(comment="x").public_openssh


def test_repr_hides_the_private_key() -> None:
    pair = generate_ed25519(comment="x")
    assert "PRIVATE" not in repr(pair)


@pytest.mark.parametrize("comment", ["two\nlines", "cr\r", "nul\0"])
def test_comment_must_be_one_line(comment: str) -> None:
    with pytest.raises(InvalidInput):
        generate_ed25519(comment=comment)


def test_write_private_key_modes_and_contents(tmp_path: Path) -> None:
    pair = generate_ed25519(comment="ws")
    path = tmp_path / "id_ed25519"
    write_private_key(path=path, keypair=pair)
    assert path.read_text() == pair.private_openssh
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pub = tmp_path / "id_ed25519.pub"
    assert pub.read_text() == pair.public_openssh + "\n"
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["id_ed25519", "id_ed25519.pub"]  # no temp left


def test_write_private_key_replaces_a_loose_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("old")
    path.chmod(0o644)
    pair = generate_ed25519(comment="ws")
    write_private_key(path=path, keypair=pair)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == pair.private_openssh


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")
def test_ssh_keygen_derives_the_same_public_key(tmp_path: Path) -> None:
    pair = generate_ed25519(comment="ws")
    path = tmp_path / "key"
    write_private_key(path=path, keypair=pair)
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(path)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert derived[:2] == pair.public_openssh.split()[:2]


def test_keypair_is_frozen() -> None:
    pair = KeyPair(private_openssh="p", public_openssh="ssh-ed25519 AAAA c")
    with pytest.raises(AttributeError):
        pair.public_openssh = "x"  # type: ignore[misc]
