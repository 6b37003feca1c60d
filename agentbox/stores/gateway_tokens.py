"""A workspace's phantom token: what the guest presents to the credential gateway in place
of an API key.

Random, minted when the guest gets a fresh state (create, start, every reset) and at every
session start, replaced atomically (so an old token is dead the moment a new one exists) and
removed when a session ends. It is worthless outside the gateway of the workspace it was
minted for: each gateway reads only its own workspace's file. The file (0600, beside the
workspace record) also carries the session's API budget, which the gateway enforces.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from agentbox.config.atomic_file import write_atomically
from agentbox.model.api_use import ApiBudget, ApiUse

TOKEN_FILE = "gateway-token.json"
USAGE_FILE = "gateway-usage.json"  # in the egress dir; written by the gateway after each request
TOKEN_PREFIX = "sk-agentbox-phantom-"  # reads as a key to clients; says what it is to a human


@dataclass(frozen=True)
class GatewayToken:
    token: str
    workspace: str
    session: str  # the session it belongs to; "" between sessions
    minted: str  # ISO 8601 UTC
    budget: ApiBudget = field(default_factory=ApiBudget)

    @property
    def id(self) -> str:
        """Names the token in audit records and usage counts without revealing it."""
        return hashlib.sha256(self.token.encode()).hexdigest()[:12]

    def matches(self, presented: str) -> bool:
        return hmac.compare_digest(self.token.encode(), presented.encode())


class GatewayTokenFile:
    def __init__(self, *, path: Path) -> None:
        self.path = path

    @classmethod
    def in_dir(cls, directory: Path) -> GatewayTokenFile:
        return cls(path=directory / TOKEN_FILE)

    def mint(self, *, workspace: str, session: str = "", budget: ApiBudget | None = None) -> GatewayToken:
        token = GatewayToken(token=TOKEN_PREFIX + secrets.token_hex(24), workspace=workspace, session=session,
                             minted=datetime.now(UTC).isoformat(timespec="seconds"), budget=budget or ApiBudget())
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomically(path=self.path, data=(json.dumps(asdict(token)) + "\n").encode(), mode=0o600)
        return token

    def current(self) -> GatewayToken | None:
        """The live token; None when there is none (between a session's end and the next
        mint) or the file is unreadable (the gateway then refuses everything: fails closed)."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            raw["budget"] = ApiBudget(**raw.get("budget", {}))
            token = GatewayToken(**raw)
        except (OSError, ValueError, TypeError, KeyError):
            return None
        except Exception:  # noqa: BLE001 - a budget field of the wrong type (InvalidInput): no live token
            return None
        return token if isinstance(token.token, str) and token.token.startswith(TOKEN_PREFIX) else None

    def revoke(self) -> None:
        self.path.unlink(missing_ok=True)


def read_usage(*, path: Path) -> tuple[str, ApiUse]:
    """(token id, its API use so far) from the gateway's usage file; ("", nothing) without one."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return str(raw["token"]), ApiUse(**raw["use"])
    except (OSError, ValueError, KeyError, TypeError):
        return "", ApiUse()
