"""The app's one boundary for errors nobody expected: a traceback in the error log and a
screen that says where it is, instead of a crash or a silently swallowed failure."""

from __future__ import annotations

import asyncio

import pytest

from agentbox.tui.crash import CrashScreen
from agentbox.tui.dashboard import DashboardScreen
from textual import events
from textual.widgets import Button, Static

from .conftest import TuiWorld, screen_text, settle, until


def crash_text(pilot) -> str:  # type: ignore[no-untyped-def]
    """What the error screen says (its widgets' text: a long path would wrap on screen)."""
    return "\n".join(str(s.content) for s in pilot.app.screen.query(Static))


def test_a_failing_background_task_logs_its_traceback_and_the_app_carries_on(
        world: TuiWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    world.make("demo")

    def list_domains_with_a_bug():  # type: ignore[no-untyped-def]
        raise RuntimeError("the backend tripped over itself")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await until(pilot, lambda: "demo" in screen_text(pilot), what="the dashboard lists demo")
        monkeypatch.setattr(world.backend, "list_domains", list_domains_with_a_bug)
        await pilot.press("f5")
        await until(pilot, lambda: isinstance(pilot.app.screen, CrashScreen), what="the error screen")
        log = world.ctx.paths.error_log
        text = crash_text(pilot)
        assert "RuntimeError: the backend tripped over itself" in text
        assert f"The traceback is in {log}" in text
        traceback = log.read_text()
        assert "list_domains_with_a_bug" in traceback and "RuntimeError" in traceback
        assert log.stat().st_mode & 0o777 == 0o600  # tracebacks name workspaces and paths
        monkeypatch.undo()
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(pilot.app.screen, DashboardScreen)
        await pilot.press("f5")
        await until(pilot, lambda: "demo" in screen_text(pilot), what="the dashboard works again")

    world.run(scenario)


async def poll(condition) -> None:  # type: ignore[no-untyped-def]
    """Wait for `condition` without Pilot's pause, which waits for every screen: after a
    handler failed, one of them no longer processes messages."""
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


def test_a_failing_screen_handler_offers_only_quit(world: TuiWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    async def pressed_with_a_bug(self, event) -> None:  # type: ignore[no-untyped-def]
        raise ValueError("no such button")

    monkeypatch.setattr(DashboardScreen, "on_button_pressed", pressed_with_a_bug)
    app = world.app()

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        pilot.app.screen.query_one("#do-new", Button).press()
        await poll(lambda: isinstance(pilot.app.screen, CrashScreen) and "no such button" in crash_text(pilot))
        screen = pilot.app.screen
        assert "ValueError: no such button" in crash_text(pilot)
        assert f"The traceback is in {world.ctx.paths.error_log}" in crash_text(pilot)
        await poll(lambda: bool(screen.query(Button)))
        assert [b.id for b in screen.query(Button)] == ["quit"]  # the dashboard has stopped
        screen.action_close()  # Esc: there is nothing safe to go back to
        assert pilot.app.screen is screen
        screen.action_quit()  # q
        await poll(lambda: not pilot.app.is_running)

    world.run(scenario, app=app)
    assert app.return_code == 1
    assert "pressed_with_a_bug" in world.ctx.paths.error_log.read_text()


def test_a_failing_key_binding_ends_the_app_and_says_where_the_traceback_is(
        world: TuiWorld, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    def keys_with_a_bug(self) -> None:  # type: ignore[no-untyped-def]
        raise ValueError("no such key")

    monkeypatch.setattr(DashboardScreen, "action_keys", keys_with_a_bug)
    app = world.app()

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        # Bindings run in the app's own message loop: when it stops, the app ends.
        pilot.app.post_message(events.Key("question_mark", "?"))
        await poll(lambda: bool(pilot.app.unexpected))

    world.run(scenario, app=app)
    assert app.return_code == 1
    assert "keys_with_a_bug" in world.ctx.paths.error_log.read_text()
    said = "".join(capfd.readouterr().err.split())  # printed once the terminal is back to normal (wrapped)
    assert "ValueError:nosuchkey" in said and str(world.ctx.paths.error_log) in said


def test_a_log_that_cannot_be_written_is_said_so(world: TuiWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    world.ctx.paths.cache_dir.parent.mkdir(parents=True, exist_ok=True)
    world.ctx.paths.cache_dir.write_text("a file where the cache dir should be\n")

    def list_domains_with_a_bug():  # type: ignore[no-untyped-def]
        raise KeyError("state")

    monkeypatch.setattr(world.backend, "list_domains", list_domains_with_a_bug)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await until(pilot, lambda: isinstance(pilot.app.screen, CrashScreen), what="the error screen")
        assert f"The traceback could not be written to {world.ctx.paths.error_log}" in crash_text(pilot)

    world.run(scenario)
