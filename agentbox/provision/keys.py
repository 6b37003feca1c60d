"""Ed25519 key pairs generated on the host: the workspace's client key and the guest's host key.

Both are made here (not in the guest) so the host key can be pinned before the guest ever
answers, and so no key material depends on the guest's entropy at first boot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agentbox.config.atomic_file import write_atomically
from agentbox.errors import AgentboxError, InvalidInput, PermissionDenied


@dataclass(frozen=True)
class KeyPair:
    private_openssh: str  # "-----BEGIN OPENSSH PRIVATE KEY-----\n...", unencrypted
    public_openssh: str  # "ssh-ed25519 AAAA... comment", one line, no newline

    def __repr__(self) -> str:
        # Keeps the private half out of logs, tracebacks and test failure output.
        return f"KeyPair(public_openssh={self.public_openssh!r}, private_openssh=<hidden>)"


def generate_ed25519(*, comment: str) -> KeyPair:
    """A fresh, unencrypted ed25519 key pair; `comment` ends the public line."""
    if any(ch in comment for ch in "\r\n\0"):
        raise InvalidInput(f"an SSH key comment must be one line, got {comment!r}")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.OpenSSH,
        encryption_algorithm=serialization.NoEncryption(),
    ).decode("ascii")
    public = (
        key.public_key()
        .public_bytes(
            encoding=serialization.Encoding.OpenSSH,
            format=serialization.PublicFormat.OpenSSH,
        )
        .decode("ascii")
    )
    return KeyPair(private_openssh=private, public_openssh=f"{public} {comment}".rstrip())


def write_private_key(*, path: Path, keypair: KeyPair) -> None:
    """Write the private key to `path` (0600) and the public line to `path.with_suffix('.pub')`.

    Each file is written under a temporary name and renamed, so a reader never sees half a
    key and an existing file with looser permissions is replaced, not reused.
    """
    _write_atomically(path=path, data=keypair.private_openssh.encode("ascii"), mode=0o600)
    _write_atomically(
        path=path.with_suffix(".pub"), data=(keypair.public_openssh + "\n").encode("ascii"), mode=0o644
    )


def _write_atomically(*, path: Path, data: bytes, mode: int) -> None:
    try:
        write_atomically(path=path, data=data, mode=mode)
    except PermissionError as exc:
        raise PermissionDenied(f"cannot write {path}: {exc.strerror}",
                               hint=f"check the owner and permissions of {path.parent}") from None
    except OSError as exc:
        raise AgentboxError(f"cannot write {path}: {exc.strerror or exc}",
                            hint=f"check the free space and the permissions of {path.parent}") from None
