"""The libvirt host of a `qemu+ssh://` URI as an SSH jump host: the guest's SSH host
forward listens on that host's 127.0.0.1, so agentbox reaches the guest through it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from agentbox.errors import InvalidInput

DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")


@dataclass(frozen=True)
class JumpHost:
    host: str
    port: int
    user: str
    key: Path | None  # the URI's `keyfile=`; None: the user's default keys
    known_hosts: Path  # the URI's `known_hosts=`; the host's key must be in it (never no_verify)

    @property
    def destination(self) -> str:
        """OpenSSH's `ProxyJump` form."""
        return f"{self.user}@{self.host}:{self.port}" if self.user else f"{self.host}:{self.port}"


def jump_host_of(uri: str) -> JumpHost | None:
    """The jump host of a remote libvirt URI; None for a local one (no host in the URI)."""
    parts = urlsplit(uri)
    if not parts.netloc:
        return None
    transport = parts.scheme.partition("+")[2]
    if transport != "ssh":
        raise InvalidInput(
            f"libvirt URI {uri!r}: a remote host is reached over SSH only",
            hint="use qemu+ssh://USER@HOST[:PORT]/system",
        )
    if not parts.hostname:
        raise InvalidInput(f"libvirt URI {uri!r} names no host", hint="use qemu+ssh://USER@HOST[:PORT]/system")
    query = parse_qs(parts.query)
    key = query.get("keyfile", [""])[-1]
    known = query.get("known_hosts", [""])[-1]
    return JumpHost(host=parts.hostname, port=parts.port or 22, user=unquote(parts.username or ""),
                    key=Path(key).expanduser() if key else None,
                    known_hosts=Path(known or DEFAULT_KNOWN_HOSTS).expanduser())
