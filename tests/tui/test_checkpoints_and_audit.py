"""The Checkpoints screen (save, restore, delete) and the live Audit log screen."""

from __future__ import annotations

from textual.widgets import Button, DataTable, Input

from agentbox.audit import AuditLog, verify_chain
from agentbox.audit.segments import segment_paths
from agentbox.model.progress import CancelToken, ignore_progress
from agentbox.tui.audit_screen import FOLLOW_GROUP, AuditScreen
from agentbox.tui.checkpoints_screen import CheckpointsScreen
from agentbox.tui.dashboard import DashboardScreen
from agentbox.tui.dialogs import AskScreen

from .conftest import TuiWorld, screen_text, settle, until


def labels(world: TuiWorld, name: str = "demo") -> list[str]:
    return [c.label for c in world.services.snapshots.checkpoints(name=name)]


def test_checkpoints_are_saved_restored_and_deleted(world: TuiWorld) -> None:
    world.make("demo")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("k")
        await settle(pilot)
        assert isinstance(pilot.app.screen, CheckpointsScreen)
        assert "No checkpoints yet: press c to save the current state." in screen_text(pilot)

        await pilot.press("c")
        await settle(pilot)
        ask = pilot.app.screen
        assert isinstance(ask, AskScreen)
        await pilot.press(*"Before")
        assert "invalid checkpoint label 'Before'" in screen_text(pilot)
        assert ask.query_one("#ok", Button).disabled
        ask.query_one(Input).value = ""
        await pilot.press(*"before-upgrade", "enter")
        await settle(pilot)
        assert labels(world) == ["before-upgrade"]
        table = pilot.app.screen.query_one("#checkpoints", DataTable)
        assert [str(c) for c in table.get_row_at(0)][::2] == ["before-upgrade", "disk and RAM"]
        assert "checkpoint before-upgrade of demo saved (disk and RAM)" in screen_text(pilot)

        await pilot.press("r")
        await settle(pilot)
        assert "Restore demo to before-upgrade?" in screen_text(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert world.events("demo")[-1] == "restore"
        assert "demo back to checkpoint before-upgrade in" in screen_text(pilot)

        await pilot.press("d", "y")
        await settle(pilot)
        assert labels(world) == []
        assert world.events("demo")[-1] == "checkpoint.deleted"
        assert "No checkpoints yet" in screen_text(pilot)

        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(pilot.app.screen, DashboardScreen)

    world.run(scenario)


def test_the_dashboard_lists_checkpoints_in_the_details(world: TuiWorld) -> None:
    world.make("demo")
    world.services.snapshots.checkpoint(name="demo", label="first")
    world.services.snapshots.checkpoint(name="demo", label="second")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        assert "first, second" in screen_text(pilot)

    world.run(scenario)


def test_the_audit_log_lists_the_records_and_follows_new_ones(world: TuiWorld) -> None:
    world.make("demo")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("a")
        screen = pilot.app.screen
        assert isinstance(screen, AuditScreen)
        table = screen.query_one("#audit", DataTable)
        await until(pilot, lambda: table.row_count == 2, what="the existing records are listed")
        assert [str(table.get_row_at(i)[2]) for i in range(2)] == ["create.started", "created"]
        assert "Audit log of demo" in screen_text(pilot)

        # Written by another process meanwhile (a CLI command, the session timer): it appears.
        world.services.workspaces.stop(name="demo", force=True, on_progress=ignore_progress, cancel=CancelToken())
        await until(pilot, lambda: table.row_count == 3, what="the new record is followed")
        assert [str(c) for c in table.get_row_at(2)][2:] == ["stopped", "how=forced"]
        assert table.cursor_row == 2  # it keeps to the tail
        assert "3 record(s)" in screen_text(pilot)

        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(pilot.app.screen, DashboardScreen)
        # Leaving the screen stops the follower thread.
        await until(pilot, lambda: not [w for w in pilot.app.workers if w.group == FOLLOW_GROUP and w.is_running],
                    what="the follower stops")

    world.run(scenario)


def test_the_details_show_the_recent_events_of_a_rotated_log_behind_many_decisions(world: TuiWorld) -> None:
    world.make("demo")
    path = world.ctx.paths.audit_log("demo")
    log = AuditLog(path=path, clock=world.clock, rotate_bytes=700)  # as the proxy and the services append

    def busy(first: int, last: int) -> None:
        for n in range(first, last):
            log.append(event="network.decision", details={"host": f"h{n}.example", "allowed": True})
            if n % 10 == 9:
                log.append(event="checkpoint", details={"label": f"cp{n // 10}"})

    busy(0, 40)
    assert len(segment_paths(path)) > 5 and verify_chain(path=path).intact

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        text = screen_text(pilot)
        assert all(f"checkpoint label=cp{n}" in text for n in range(4)) and "09:30 created" in text
        assert "h39.example" not in text  # decisions have a row of their own, from the network log
        busy(40, 60)  # more rotations while the dashboard is open
        await pilot.press("f5")
        await settle(pilot)
        text = screen_text(pilot)
        assert all(f"checkpoint label=cp{n}" in text for n in range(1, 6)) and "label=cp0" not in text

    world.run(scenario)
