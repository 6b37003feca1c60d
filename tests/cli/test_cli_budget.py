"""`agentbox budget NAME`: show and set a workspace's per-session budgets, through main(argv)
on the Fake backend; bad sizes get exit 2 with what a size looks like."""

from __future__ import annotations

import json

import pytest

from agentbox import bootstrap
from agentbox.model.progress import CancelToken
from tests.cli.fake_cli import run_main, with_workspace
from tests.services.conftest import World, world  # noqa: F401 - the Fake world, as a fixture here


@pytest.fixture()
def cli(world: World, monkeypatch: pytest.MonkeyPatch) -> World:  # noqa: F811
    return with_workspace(world, monkeypatch)


run = run_main


def test_budget_sets_shows_and_a_session_reports_its_use(cli: World, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["budget", "ws"], capsys)
    assert code == 0 and "egress_bytes none, disk_write_bytes none, cpu_seconds none" in out
    code, out, _ = run(["budget", "ws", "--egress", "100M", "--cpu", "10m", "--on-exceeded", "pause"], capsys)
    assert code == 0 and "egress_bytes 95.4 MiB" in out and "cpu_seconds 600.0 s" in out and "pause" in out
    assert cli.ctx.records.load(name="ws").host_budget.egress_bytes == 100_000_000
    bootstrap.build_services().sessions.start(name="ws", max_minutes=None, on_progress=lambda _: None,
                                              cancel=CancelToken())
    code, out, _ = run(["budget", "ws", "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["session"] and [line["budget"] for line in doc["lines"]] == ["egress_bytes", "cpu_seconds"]
    code, out, _ = run(["budget", "ws"], capsys)
    assert "egress_bytes: 0 B of 95.4 MiB" in out


@pytest.mark.parametrize(("argv", "message"), [(["--egress", "lots"], "--egress 'lots' is not a size"),
                                               (["--disk-writes=-1G"], "--disk-writes '-1G' is not a size"),
                                               (["--cpu", "forever"], "--cpu 'forever' is not a duration")])
def test_a_bad_size_is_refused_with_a_hint(cli: World, capsys: pytest.CaptureFixture[str], argv: list[str],
                                           message: str) -> None:
    code, _, err = run(["budget", "ws", *argv], capsys)
    assert code == 2 and message in err and "hint:" in err
    assert cli.ctx.records.load(name="ws").host_budget.unlimited


def test_a_budget_for_a_missing_workspace_is_not_found(cli: World, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["budget", "nope", "--egress", "1M"], capsys)
    assert code == 4 and "nope" in err


def test_the_receipt_lists_each_budget_and_its_use(cli: World, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    history = bootstrap.build_history(paths=cli.ctx.paths)
    monkeypatch.setattr(bootstrap, "build_history", lambda **_: history)
    assert run(["budget", "ws", "--disk-writes", "1G"], capsys)[0] == 0
    session = bootstrap.build_services().sessions.start(name="ws", max_minutes=None, on_progress=lambda _: None,
                                                        cancel=CancelToken())
    cli.backend.add_usage("agentbox-ws", disk_write_bytes=3 << 20)
    assert run(["session", "end", "ws"], capsys)[0] == 0
    code, out, _ = run(["receipt", "ws", session.id], capsys)
    assert code == 0 and "Budgets: disk_write_bytes: 3.0 MiB of 953.7 MiB" in out


def test_create_takes_budgets_and_refuses_a_bad_one_before_making_anything(
        cli: World, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["create", "ws2", "--egress-budget", "lots"], capsys)
    assert code == 2 and "--egress-budget 'lots' is not a size" in err
    assert cli.ctx.records.load(name="ws2") is None
    code, _, err = run(["create", "ws2", "--egress-budget", "50M", "--cpu-budget", "1h"], capsys)
    assert code == 0, err
    budget = cli.ctx.records.load(name="ws2").host_budget
    assert (budget.egress_bytes, budget.disk_write_bytes, budget.cpu_seconds) == (50_000_000, 0, 3600)


def test_a_guest_its_budget_paused_is_shown_and_resumed_after_raising_it(
        cli: World, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["budget", "ws", "--cpu", "60", "--on-exceeded", "pause"], capsys)[0] == 0
    services = bootstrap.build_services()
    services.sessions.start(name="ws", max_minutes=None, on_progress=lambda _: None, cancel=CancelToken())
    cli.backend.add_usage("agentbox-ws", cpu_seconds=90.0)
    reached = services.budgets.check("ws")
    assert reached is not None
    services.budgets.enforce("ws", *reached)  # what the supervisor does: the guest is paused

    code, out, _ = run(["list"], capsys)
    assert code == 0 and "paused by its cpu_seconds budget (agentbox budget ws --resume)" in out
    code, _, err = run(["start", "ws"], capsys)
    assert code == 2 and "'ws' is paused by its cpu_seconds budget" in err and "agentbox budget ws --resume" in err
    code, out, err = run(["budget", "ws", "--resume"], capsys)
    assert code == 2 and "cpu_seconds budget that paused 'ws' is still exceeded" in err and "90.0 s of 60.0 s" in err
    assert "hint: raise it first: agentbox budget ws --cpu 3m --resume" in err
    assert cli.backend.get(name="agentbox-ws").state.value == "paused"

    code, out, err = run(["budget", "ws", "--cpu", "2h", "--resume"], capsys)
    assert code == 0, err
    assert "ws resumed: its cpu_seconds budget had paused it" in out and "cpu_seconds: 90.0 s of 7200.0 s" in out
    assert cli.backend.get(name="agentbox-ws").state.value == "running"
    code, out, _ = run(["list"], capsys)
    assert "running" in out and "paused" not in out
    code, _, err = run(["budget", "ws", "--resume"], capsys)
    assert code == 2 and "'ws' is not paused by a budget" in err
