"""`agentbox evidence NAME --restore ID --as NEWNAME` through main(argv) on the Fake backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentbox import bootstrap
from agentbox.cli.main import main
from agentbox.model.progress import CancelToken
from agentbox.services.create import CreateRequest
from tests.services.conftest import World, world  # noqa: F401 - the Fake world, as a fixture here


@pytest.fixture()
def evidence_id(world: World, monkeypatch: pytest.MonkeyPatch) -> str:  # noqa: F811
    services = bootstrap.build_services(ctx=world.ctx)
    monkeypatch.setattr(bootstrap, "build_services", lambda **_: services)
    services.create.create(request=CreateRequest(name="ws"), on_progress=lambda _: None, cancel=CancelToken())
    return services.panic.panic(name="ws", on_progress=lambda _: None).evidence.id


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_restore_names_the_new_workspace_says_the_ram_is_not_restored_and_keeps_it_offline(
        evidence_id: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["evidence", "ws", "--restore", evidence_id, "--as", "look"], capsys)
    assert code == 0
    assert "restored into look: network off" in out and "agentbox ssh look" in out
    assert "cannot be loaded into a running guest" in out and "integrity after the restore: matches" in out
    code, _, err = run(["net", "look", "open"], capsys)
    assert code != 0 and "stays off" in err and "agentbox destroy look" in err
    code, out, _ = run(["evidence", "ws", "--verify", evidence_id], capsys)
    assert code == 0 and "integrity: matches" in out


def test_restore_needs_a_new_name_and_as_needs_a_restore(evidence_id: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["evidence", "ws", "--restore", evidence_id], capsys)
    assert code == 2 and f"--restore {evidence_id} --as ws-inspect" in err
    code, _, err = run(["evidence", "ws", "--as", "look"], capsys)
    assert code == 2 and "--restore ID --as look" in err


def test_changed_evidence_is_refused_with_a_hint(evidence_id: str, world: World,  # noqa: F811
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    manifest = json.loads(run(["evidence", "ws", "--json"], capsys)[1])[0]
    Path(manifest["disk"]["path"]).write_bytes(b"tampered\n")
    code, _, err = run(["evidence", "ws", "--restore", evidence_id, "--as", "look"], capsys)
    assert code == 15 and "refusing to restore" in err and f"--verify {evidence_id}" in err
    assert "look" not in world.ctx.records.names()
