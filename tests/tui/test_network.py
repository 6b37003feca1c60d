"""The network from the TUI: the mode picker, the allowlist editor, egress status and
recent decisions in the details, and the live network log."""

from __future__ import annotations

import re

from textual.widgets import Button, DataTable, Input

from agentbox.model.network import NetworkMode
from agentbox.model.progress import CancelToken, ignore_progress
from agentbox.tui.audit_screen import FOLLOW_GROUP
from agentbox.tui.dashboard import DashboardScreen
from agentbox.tui.dialogs import ErrorScreen
from agentbox.tui.network_screen import AllowlistScreen, NetLogScreen, NetworkModeScreen

from .conftest import TuiWorld, screen_text, settle, until
from .test_actions import status


def mode(world: TuiWorld, name: str = "demo") -> NetworkMode:
    return world.services.network.policy(name=name).mode


def applied_modes(world: TuiWorld, name: str = "demo") -> list[str]:
    """Every mode the workspace's proxy was given, in order."""
    return [policy.mode.value for workspace, policy in world.egress.applied if workspace == name]


def test_w_picks_the_network_mode_directly(world: TuiWorld) -> None:
    world.make("demo")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        assert re.search(r"demo +● running +- +tiny +⊘ off", screen_text(pilot))
        before = len(applied_modes(world))
        await pilot.press("w")
        await settle(pilot)
        picker = pilot.app.screen
        assert isinstance(picker, NetworkModeScreen)
        text = screen_text(pilot)
        assert "Network of demo" in text and "now ⊘ off: no network at all" in text
        assert "Off (1)" in text and "Allowlist (2)" in text and "Learn (3)" in text and "Open (4)" in text
        await pilot.press("2")
        await settle(pilot)
        assert mode(world) is NetworkMode.ALLOWLIST
        assert applied_modes(world)[before:] == ["allowlist"]
        assert status(pilot) == "demo: network allowlist (applies now, for the next connection)"
        text = screen_text(pilot)
        assert re.search(r"demo +● running +- +tiny +☰ allowlist", text)  # the table: a mark and the word
        assert "☰ allowlist: only listed destinations" in text  # the details
        assert "reaches now: only the allowlist, through the egress proxy" in text
        audit = world.audit("demo")[-1]
        assert (audit["event"], audit["details"]["mode"], audit["details"]["live"]) == ("network.policy",
                                                                                       "allowlist", True)
        await pilot.click("#do-network")  # the button does what the key does
        await settle(pilot)
        await pilot.click("#mode-open")  # and so do the picker's buttons
        await settle(pilot)
        assert mode(world) is NetworkMode.OPEN
        assert "◉ open: any public address" in screen_text(pilot)
        await pilot.press("w")
        await settle(pilot)
        await pilot.press("escape")  # cancelled: nothing changes
        await settle(pilot)
        assert isinstance(pilot.app.screen, DashboardScreen)
        assert mode(world) is NetworkMode.OPEN
        await pilot.press("w", "1")
        await settle(pilot)
        assert mode(world) is NetworkMode.OFF
        assert "reaches now: none: network mode is off" in screen_text(pilot)
        assert applied_modes(world)[before:] == ["allowlist", "open", "off"]

    world.run(scenario, size=(80, 24))  # narrow: the details span the screen, no line wraps


def test_turning_an_allowlisted_workspace_off_never_passes_through_open(world: TuiWorld) -> None:
    world.make("demo")
    world.services.network.set_mode(name="demo", mode="allowlist")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        before = len(applied_modes(world))
        await pilot.press("w")
        await settle(pilot)
        assert "now ☰ allowlist" in screen_text(pilot)
        await pilot.press("1")
        await settle(pilot)
        assert mode(world) is NetworkMode.OFF
        assert applied_modes(world)[before:] == ["off"]  # once, and the proxy never saw open
        assert [r["details"]["mode"] for r in world.audit("demo") if r["event"] == "network.policy"][-1:] == ["off"]
        assert "open" not in [r["details"]["mode"] for r in world.audit("demo") if r["event"] == "network.policy"]

    world.run(scenario)


def test_switching_a_stopped_workspace_applies_when_it_next_runs(world: TuiWorld) -> None:
    world.make("idle", running=False)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        assert "reaches now: none: the workspace is not running" in screen_text(pilot)
        await pilot.press("w", "2")
        await settle(pilot)
        assert mode(world, "idle") is NetworkMode.ALLOWLIST
        assert status(pilot) == "idle: network allowlist (applies when the workspace next runs)"

    world.run(scenario, size=(80, 24))


def test_a_switch_the_service_refuses_shows_its_message_and_hint(world: TuiWorld) -> None:
    world.make("demo")
    world.ctx.records.files(name="demo").policy.write_text("{not json")  # damaged behind our back

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        assert "? unknown" in screen_text(pilot)  # the table and details say they cannot tell
        await pilot.press("w", "2")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ErrorScreen)
        text = screen_text(pilot)
        assert "Could not switch the network of demo" in text and "cannot read policy file" in text
        assert "Traceback" not in text

    world.run(scenario)


def test_the_allowlist_editor_checks_adds_and_removes_entries(world: TuiWorld) -> None:
    world.make("demo")
    world.services.network.set_mode(name="demo", mode="allowlist")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("l")
        await settle(pilot)
        editor = pilot.app.screen
        assert isinstance(editor, AllowlistScreen)
        assert "Nothing is allowed yet" in screen_text(pilot)
        add = editor.query_one("#add", Button)

        await pilot.press(*"http://example.org/x")  # checked as it is typed
        assert "✗ invalid allowlist entry 'http://example.org/x': give a host name or address, not a URL" \
               in screen_text(pilot)
        assert add.disabled
        await pilot.press("enter")  # the service refuses it too, and says what would do
        await settle(pilot)
        text = screen_text(pilot)
        assert "valid forms: example.com, example.com:8080" in text
        assert world.services.network.policy(name="demo").allowlist == ()

        editor.query_one(Input).value = ""
        await pilot.press(*"*.PyPI.org")
        assert "✓ lets through any name under pypi.org (not pypi.org itself) on ports 80 and 443" \
               in screen_text(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert world.services.network.policy(name="demo").render() == ("*.pypi.org",)
        await pilot.press(*"10.0.2.2:8080", "enter")
        await settle(pilot)
        assert world.services.network.policy(name="demo").render() == ("*.pypi.org", "10.0.2.2:8080")
        table = editor.query_one("#allowlist", DataTable)
        assert [str(table.get_row_at(i)[0]) for i in range(table.row_count)] == ["*.pypi.org", "10.0.2.2:8080"]
        assert "10.0.2.2:8080 allowed; demo: network allowlist (applies now" in status(pilot)
        assert world.audit("demo")[-1]["details"]["allowlist"] == ["*.pypi.org", "10.0.2.2:8080"]

        table.focus()
        await pilot.press("down", "delete")  # the second one goes
        await settle(pilot)
        assert world.services.network.policy(name="demo").render() == ("*.pypi.org",)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(pilot.app.screen, DashboardScreen)
        assert re.search(r"Allowlist +\*\.pypi\.org", screen_text(pilot))

    world.run(scenario)


def test_the_allowlist_editor_says_when_the_mode_makes_the_list_moot(world: TuiWorld) -> None:
    world.make("demo")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("l")
        await settle(pilot)
        text = screen_text(pilot)
        assert "⊘ off: no network at all" in text
        assert "This list applies in allowlist mode only: w on the dashboard switches the mode." in text

    world.run(scenario)


def test_the_details_show_the_latest_network_decisions(world: TuiWorld) -> None:
    world.make("demo")
    world.services.network.set_mode(name="demo", mode="allowlist")
    world.log_connection("demo", host="old.example", allowed=True, rule="old.example", minute=30)
    world.log_connection("demo", host="pypi.org", allowed=True, rule="pypi.org", minute=31)
    world.log_connection("demo", host="files.example", allowed=True, rule="files.example", minute=32)
    world.log_connection("demo", host="evil.example", allowed=False, rule="not-listed", minute=33)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        text = screen_text(pilot)
        assert "09:31 ✓ pypi.org:443" in text and "09:33 ✗ evil.example:443 (not-listed)" in text
        assert "old.example" not in text  # only the latest three

    world.run(scenario)


def test_the_network_log_follows_new_decisions_and_stops_when_closed(world: TuiWorld) -> None:
    world.make("demo")
    world.log_connection("demo", host="pypi.org", allowed=True, rule="pypi.org", minute=31)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("g")
        screen = pilot.app.screen
        assert isinstance(screen, NetLogScreen)
        table = screen.query_one("#netlog", DataTable)
        await until(pilot, lambda: table.row_count == 1, what="the existing decision is listed")
        assert [str(c) for c in table.get_row_at(0)] == ["09:31:00", "✓ allowed", "pypi.org:443 (151.101.0.50)",
                                                         "pypi.org", "completed"]
        # The proxy decides another connection meanwhile: it appears.
        world.log_connection("demo", host="evil.example", allowed=False, rule="not-listed", minute=32)
        await until(pilot, lambda: table.row_count == 2, what="the new decision is followed")
        assert [str(c) for c in table.get_row_at(1)][1:4] == ["✗ denied", "evil.example:443", "not-listed"]
        assert table.cursor_row == 1  # it keeps to the tail
        assert "2 connection(s), 1 denied" in screen_text(pilot)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(pilot.app.screen, DashboardScreen)
        await until(pilot, lambda: not [w for w in pilot.app.workers if w.group == FOLLOW_GROUP and w.is_running],
                    what="the follower stops")

    world.run(scenario)


def test_the_network_log_of_a_workspace_that_vanished_says_so(world: TuiWorld) -> None:
    world.make("demo")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        world.services.workspaces.destroy(name="demo", on_progress=ignore_progress)  # behind the TUI's back
        await pilot.press("g")
        await until(pilot, lambda: "✗" in screen_text(pilot), what="the error is shown")
        assert "demo" in str(pilot.app.screen.query_one("#netlog-count").content)
        assert "Traceback" not in screen_text(pilot)

    world.run(scenario)


def test_the_palette_offers_the_new_actions(world: TuiWorld) -> None:
    world.make("demo")
    world.services.sessions.start(name="demo", max_minutes=None, on_progress=ignore_progress, cancel=CancelToken())

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("ctrl+p")
        await settle(pilot)
        await pilot.press(*"net log")
        await until(pilot, lambda: "Net log demo" in screen_text(pilot), what="the palette offers Net log demo")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(pilot.app.screen, NetLogScreen)

    world.run(scenario)
