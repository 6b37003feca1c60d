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
