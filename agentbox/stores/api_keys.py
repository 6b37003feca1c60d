"""The host's API keys: one per provider, never in a guest.

Kept in the desktop keyring (the `keyring` library) when a real backend is available, else
in a 0600 file in agentbox's config dir. Either way `api-keys.json` (0600) lists what is
stored: provider, fingerprint (a SHA-256 prefix, never the key) and where; with the file
backend it holds the key too. The keyring cannot list its entries, hence the index.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentbox.config.atomic_file import write_atomically
from agentbox.errors import AgentboxError, ConfigError, InvalidInput, NotFound
from agentbox.model.providers import get_provider

KEYRING_SERVICE = "agentbox"
INDEX_FILE = "api-keys.json"
NO_KEYRING_ENV = "AGENTBOX_NO_KEYRING"  # "1": always the file (tests, headless hosts by choice)
FILE_STORE = "file"
KEYRING_STORE = "keyring"
MAX_KEY_CHARS = 4096
# Backends that are no real secret store: no keyring at all, or plaintext files of keyrings.alt.
_NOT_SECURE = ("keyring.backends.fail", "keyring.backends.null", "keyrings.alt")


@dataclass(frozen=True)
class StoredKey:
    provider: str
    fingerprint: str  # "sha256:" + 12 hex
    store: str  # keyring | file
    set_at: str  # ISO 8601 UTC


def fingerprint(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12]


def clean_key(raw: str) -> str:
    key = raw.strip()
    if not key:
        raise InvalidInput("the key is empty",
                           hint="paste the key when asked, or pipe it: agentbox key set NAME < FILE")
    if len(key) > MAX_KEY_CHARS or any(c.isspace() or not c.isprintable() for c in key):
        raise InvalidInput("that does not look like an API key (spaces, control characters or too long)",
                           hint="paste only the key itself")
    return key


class ApiKeyStore:
    def __init__(self, *, config_dir: Path, use_keyring: bool | None = None) -> None:
        self._index = config_dir / INDEX_FILE
        self._use_keyring = use_keyring

    def set(self, *, provider: str, key: str) -> StoredKey:
        name = get_provider(provider).name
        key = clean_key(key)
        entries = self._read()
        backend = self._keyring()
        entry: dict[str, Any] = {"fingerprint": fingerprint(key),
                                 "set_at": datetime.now(UTC).isoformat(timespec="seconds")}
        if backend is not None:
            try:
                backend.set_password(KEYRING_SERVICE, name, key)
                entry["store"] = KEYRING_STORE
            except Exception as exc:  # noqa: BLE001 - any keyring failure: say so, store nothing
                raise AgentboxError(f"the desktop keyring refused the key: {exc}",
                                    hint=f"set {NO_KEYRING_ENV}=1 to keep keys in a 0600 file instead") from None
        else:
            entry.update(store=FILE_STORE, key=key)
        entries[name] = entry
        self._write(entries)
        return _stored(name, entry)

    def list(self) -> tuple[StoredKey, ...]:
        return tuple(_stored(name, entry) for name, entry in sorted(self._read().items()))

    def remove(self, *, provider: str) -> StoredKey:
        name = get_provider(provider).name
        entries = self._read()
        entry = entries.pop(name, None)
        if entry is None:
            raise NotFound(f"no key stored for {name}", hint="agentbox key list shows the stored ones")
        if entry.get("store") == KEYRING_STORE and (backend := self._keyring()) is not None:
            with contextlib.suppress(Exception):  # already gone from the keyring: the index entry goes anyway
                backend.delete_password(KEYRING_SERVICE, name)
        self._write(entries)
        return _stored(name, entry)

    def get(self, *, provider: str) -> str | None:
        """The key, or None when none is stored (or the keyring no longer has it)."""
        name = get_provider(provider).name
        entry = self._read().get(name)
        if entry is None:
            return None
        if entry.get("store") == FILE_STORE:
            key = entry.get("key")
            return key if isinstance(key, str) and key else None
        backend = self._keyring()
        if backend is None:
            return None
        try:
            value = backend.get_password(KEYRING_SERVICE, name)
        except Exception:  # noqa: BLE001 - a locked or broken keyring: treated as no key (the gateway says so)
            return None
        return value or None

    def _keyring(self) -> Any:
        if self._use_keyring is False or os.environ.get(NO_KEYRING_ENV) == "1":
            return None
        try:
            import keyring  # noqa: PLC0415 - slow to import (it probes backends); only key commands need it
            backend = keyring.get_keyring()
        except Exception:  # noqa: BLE001 - no usable keyring library or backend: the file store
            return None
        module = type(backend).__module__
        if module.startswith(_NOT_SECURE) or (hasattr(backend, "backends") and not backend.backends):
            return None
        return backend

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self._index.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self._index}: unreadable key index ({exc})",
                              hint=f"remove {self._index} and set the keys again") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{self._index}: not a key index", hint=f"remove {self._index} and set the keys again")
        return {str(k): v for k, v in data.items() if isinstance(v, dict)}

    def _write(self, entries: dict[str, dict[str, Any]]) -> None:
        self._index.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomically(path=self._index, data=(json.dumps(entries, indent=2) + "\n").encode(), mode=0o600)


def _stored(name: str, entry: dict[str, Any]) -> StoredKey:
    return StoredKey(provider=name, fingerprint=str(entry.get("fingerprint", "")),
                     store=str(entry.get("store", FILE_STORE)), set_at=str(entry.get("set_at", "")))
