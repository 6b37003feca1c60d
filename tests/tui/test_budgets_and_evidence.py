"""A guest its budget paused, resumed from the dashboard (u); and the Evidence screen (v):
a panic's evidence listed, restored as a new network-off workspace, removed."""

from __future__ import annotations

from textual.widgets import Button, DataTable, Input

from agentbox.backends.base import DomainState
from agentbox.model.budget import OnExceeded
from agentbox.model.progress import CancelToken, ignore_progress
from agentbox.tui.dashboard import DashboardScreen
from agentbox.tui.dialogs import AskScreen, ErrorScreen
from agentbox.tui.evidence_screen import EvidenceScreen

from .conftest import TuiWorld, screen_text, settle


def status(pilot) -> str:  # type: ignore[no-untyped-def]
    return str(pilot.app.screen.query_one("#status").content)


def paused_by_cpu(world: TuiWorld) -> None:
    world.make("demo")
    budgets = world.services.budgets
    budgets.set(name="demo", cpu_seconds=60, on_exceeded=OnExceeded.PAUSE)
    world.services.sessions.start(name="demo", max_minutes=None, on_progress=ignore_progress, cancel=CancelToken())
    world.backend.add_usage(world.domain("demo"), cpu_seconds=90.0)
    reached = budgets.check("demo")
    assert reached is not None
    budgets.enforce("demo", *reached)  # what the supervisor does


def test_a_guest_its_budget_paused_says_so_and_u_resumes_it_once_the_budget_is_raised(world: TuiWorld) -> None:
    paused_by_cpu(world)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        text = screen_text(pilot)
        assert "‖ paused" in text and "by its cpu_seconds budget (the session" in text and "u resumes it" in text
        assert pilot.app.screen.query_one("#do-resume").display
        await pilot.press("u")  # still over its budget: refused, with what to do
        await settle(pilot)
        assert isinstance(pilot.app.screen, ErrorScreen)
        error = pilot.app.screen.error
        assert error.title == "Resuming demo failed"
        assert "the cpu_seconds budget that paused 'demo' is still exceeded" in error.message
        assert "agentbox budget demo --cpu 3m --resume" in error.hint
        assert "Resuming demo failed" in screen_text(pilot)
        assert world.state("demo") is DomainState.PAUSED
        await pilot.press("enter")
        world.services.budgets.set(name="demo", cpu_seconds=7200)
        await pilot.press("u")
        await settle(pilot)
        assert world.state("demo") is DomainState.RUNNING
        assert world.events("demo")[-1] == "budget.resumed"
        assert status(pilot) == "demo resumed (its cpu_seconds budget had paused it); the session goes on"
        assert "● running" in screen_text(pilot)
        assert not pilot.app.screen.query_one("#do-resume").display

    world.run(scenario)


def test_evidence_is_listed_restored_as_a_new_workspace_and_removed(world: TuiWorld) -> None:
    world.make("demo")
    world.make("other")
    evidence = world.services.panic.panic(name="demo", on_progress=ignore_progress).evidence
    assert evidence is not None and evidence.disk is not None

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("v")
        await settle(pilot)
        screen = pilot.app.screen
        assert isinstance(screen, EvidenceScreen)
        row = [str(cell) for cell in screen.query_one("#evidence", DataTable).get_row_at(0)]
        assert row[0] == evidence.id and row[4] == "0"

        await pilot.press("r")
        await settle(pilot)
        ask = pilot.app.screen
        assert isinstance(ask, AskScreen)
        await pilot.press(*"Look")  # the create rule
        assert "invalid workspace name 'Look'" in screen_text(pilot)
        ask.query_one(Input).value = ""
        await pilot.press(*"other")  # taken
        await pilot.pause()
        assert "a workspace named other already exists" in screen_text(pilot)
        assert ask.query_one("#ok", Button).disabled
        ask.query_one(Input).value = ""
        await pilot.press(*"demo-look", "enter")
        await settle(pilot)
        assert pilot.app.screen is screen
        record = world.ctx.records.load(name="demo-look")
        assert record is not None and record.inspection == f"demo/{evidence.id}"
        assert world.services.network.policy(name="demo-look").mode.value == "off"
        assert "evidence.restored" in world.events("demo-look")
        assert status(pilot).startswith(f"evidence {evidence.id} of demo restored into demo-look: network off")
        assert "integrity after: matches" in status(pilot)

        await pilot.press("d")
        await settle(pilot)
        assert f"Remove evidence {evidence.id}?" in screen_text(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert world.services.panic.evidence(name="demo") == ()
        assert world.events("demo")[-1] == "evidence.removed"
        assert "No evidence: the panic key (!) keeps what demo holds." in screen_text(pilot)

        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(pilot.app.screen, DashboardScreen)
        assert "demo-look" in screen_text(pilot)  # the new workspace is on the dashboard

    world.run(scenario)
