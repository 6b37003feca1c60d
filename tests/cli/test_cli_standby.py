"""`agentbox standby NAME [on|off]`, `create --standby` and what `reset` and `list` then say,
through main(argv) on the Fake backend (the vm test swaps a real guest)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from agentbox.backends.fake import DEFAULT_CAPABILITIES, FakeBackend
from tests.cli.fake_cli import run_main, with_workspace
from tests.services.conftest import World, world  # noqa: F401 - the Fake world, as a fixture here

run = run_main


def _able(world: World) -> World:  # noqa: F811
    backend = FakeBackend(owner="test-owner", capabilities=replace(DEFAULT_CAPABILITIES, standby=True))
    return replace(world, ctx=replace(world.ctx, backend=backend), backend=backend)


def test_standby_on_makes_resets_swaps_and_off_undoes_it(world: World, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    with_workspace(_able(world), monkeypatch)
    code, out, _ = run(["standby", "ws"], capsys)
    assert code == 0 and "standby of ws is off" in out
    code, out, _ = run(["standby", "ws", "on"], capsys)
    assert code == 0 and "a paused clean copy is ready" in out
    code, out, _ = run(["reset", "ws"], capsys)
    assert code == 0 and "swapped to the clean copy standing by" in out
    code, out, _ = run(["list", "--json"], capsys)
    [doc] = json.loads(out)
    assert (doc["state"], doc["standby"]) == ("running", "ready")
    code, out, _ = run(["standby", "ws", "off"], capsys)
    assert code == 0 and "standby of ws is off" in out
    code, out, _ = run(["reset", "ws"], capsys)
    assert code == 0 and "reverted to the saved disk and RAM" in out and "standby" not in out


def test_standby_where_the_backend_cannot_is_refused_with_the_reason(world: World,  # noqa: F811
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with_workspace(world, monkeypatch)
    code, _, err = run(["standby", "ws", "on"], capsys)
    assert code == 2 and "cannot have standby" in err and "cannot keep a paused copy" in err
    assert "resets still work" in err


def test_create_with_standby_says_when_it_is_ready(world: World, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    world = _able(world)
    with_workspace(world, monkeypatch)
    code, out, err = run(["create", "second", "--standby", "--json"], capsys)
    assert code == 0 and json.loads(out)["standby"] == "ready", err
    assert "preparing a paused clean copy" in err
