"""`agentbox key` through main(argv): keys from stdin (never argv), names and fingerprints
only in listings, a 0600 file where there is no desktop keyring."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest

from agentbox.cli.main import main
from agentbox.stores.api_keys import NO_KEYRING_ENV, ApiKeyStore

KEY = "sk-ant-api03-THE-REAL-KEY-xyz"


@pytest.fixture()
def keys_root(agentbox_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(NO_KEYRING_ENV, "1")
    return agentbox_root


def _stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def test_set_list_rm(keys_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _stdin(monkeypatch, KEY + "\n")
    assert main(["key", "set", "anthropic"]) == 0
    out = capsys.readouterr().out
    assert "sha256:" in out and KEY not in out
    index = keys_root / "config" / "api-keys.json"
    assert stat.S_IMODE(index.stat().st_mode) == 0o600
    assert ApiKeyStore(config_dir=keys_root / "config").get(provider="anthropic") == KEY
    assert main(["key", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [k["provider"] for k in listed] == ["anthropic"]
    assert KEY not in json.dumps(listed)
    assert listed[0]["fingerprint"].startswith("sha256:")
    assert main(["key", "list"]) == 0
    assert KEY not in capsys.readouterr().out
    assert main(["key", "rm", "anthropic"]) == 0
    assert ApiKeyStore(config_dir=keys_root / "config").get(provider="anthropic") is None
    assert main(["key", "rm", "anthropic"]) == 4


def test_unknown_provider_and_empty_key(keys_root: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    _stdin(monkeypatch, KEY)
    assert main(["key", "set", "acme"]) == 2
    err = capsys.readouterr().err
    assert "unknown API provider 'acme'" in err and "anthropic, openai" in err
    _stdin(monkeypatch, "  \n")
    assert main(["key", "set", "openai"]) == 2
    assert "the key is empty" in capsys.readouterr().err


def test_a_key_is_never_taken_from_argv(keys_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["key", "set", "anthropic", KEY])
    assert exit_info.value.code == 2
    assert not (keys_root / "config" / "api-keys.json").exists()


class _MemoryKeyring:
    """Stands in for a desktop keyring (none runs on a test machine): a real backend class of
    the keyring library, keeping secrets in memory."""

    @staticmethod
    def make() -> object:
        import keyring.backend

        class Memory(keyring.backend.KeyringBackend):
            priority = 10  # type: ignore[assignment]

            def __init__(self) -> None:
                super().__init__()
                self.secrets: dict[tuple[str, str], str] = {}

            def get_password(self, service: str, username: str) -> str | None:
                return self.secrets.get((service, username))

            def set_password(self, service: str, username: str, password: str) -> None:
                self.secrets[(service, username)] = password

            def delete_password(self, service: str, username: str) -> None:
                self.secrets.pop((service, username), None)

        return Memory()


def test_a_real_keyring_gets_the_key_and_the_index_only_its_fingerprint(
        agentbox_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keyring

    monkeypatch.delenv(NO_KEYRING_ENV, raising=False)
    backend = _MemoryKeyring.make()
    previous = keyring.get_keyring()
    keyring.set_keyring(backend)  # type: ignore[arg-type]
    try:
        store = ApiKeyStore(config_dir=agentbox_root / "config")
        assert store.set(provider="openai", key=KEY).store == "keyring"
        assert backend.secrets == {("agentbox", "openai"): KEY}  # type: ignore[attr-defined]
        assert KEY not in (agentbox_root / "config" / "api-keys.json").read_text()
        assert store.get(provider="openai") == KEY
        store.remove(provider="openai")
        assert backend.secrets == {}  # type: ignore[attr-defined]
    finally:
        keyring.set_keyring(previous)


def test_no_real_keyring_means_the_0600_file(agentbox_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keyring
    import keyring.backends.fail

    monkeypatch.delenv(NO_KEYRING_ENV, raising=False)
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())
    try:
        store = ApiKeyStore(config_dir=agentbox_root / "config")
        assert store.set(provider="anthropic", key=KEY).store == "file"
        assert store.get(provider="anthropic") == KEY
    finally:
        keyring.set_keyring(previous)
