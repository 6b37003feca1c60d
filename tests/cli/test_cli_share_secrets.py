"""`agentbox share add` with likely secrets in the folder, and the read-only proof in
`share list`, through main(argv) on the Fake backend (real copy disks and views; root)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentbox.cli.main import main
from tests.cli.fake_cli import run_main, with_workspace
from tests.services.conftest import World, world  # noqa: F401 - the Fake world, as a fixture here


@pytest.fixture()
def cli(world: World, monkeypatch: pytest.MonkeyPatch) -> World:  # noqa: F811
    return with_workspace(world, monkeypatch)


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    (folder / ".aws").mkdir(parents=True)
    (folder / "main.py").write_text("print('hi')\n")
    (folder / ".aws" / "credentials").write_text("[default]\naws_secret_access_key = abc\n")
    return folder


run = run_main


def test_share_add_with_secrets_and_no_choice_fails_closed_with_a_hint(cli: World, project: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["share", "add", "ws", str(project)], capsys)
    assert code == 2 and ".aws/credentials (AWS credentials file)" in err and "abc" not in err
    assert "hint: --exclude-secrets shares the folder without those files" in err
    code, out, _ = run(["share", "list", "ws"], capsys)
    assert "has no shares" in out


def test_excluded_secrets_are_named_and_the_proof_is_listed(cli: World, project: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["share", "add", "ws", str(project), "--exclude-secrets"], capsys)
    assert code == 0 and "copy-disk" in out and "left out (1 file(s) with likely secrets): .aws/credentials" in out
    assert "read-only proof from inside the guest at" in out and "the write was refused" in out
    code, out, _ = run(["share", "list", "ws"], capsys)
    assert "READ-ONLY PROOF" in out and "write refused" in out and "1 left out" in out
    code, out, _ = run(["share", "list", "ws", "--json"], capsys)
    [listed] = json.loads(out)
    assert listed["read_only_proof"]["refused"] is True and listed["excluded"] == [".aws/credentials"]


def test_allow_secrets_shares_them_with_a_warning(cli: World, project: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["share", "add", "ws", str(project), "--allow-secrets"], capsys)
    assert code == 0 and "warning: shared with 1 likely secret(s) (--allow-secrets)" in err
    with pytest.raises(SystemExit) as caught:
        main(["share", "add", "ws", str(project), "--allow-secrets", "--exclude-secrets"])
    assert caught.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
