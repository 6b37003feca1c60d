"""Every dashboard action on the Fake backend: its effect on the services and on the screen."""

from __future__ import annotations

import re

from textual.widgets import Button, Input

from agentbox.backends.base import DomainState
from agentbox.model.progress import CancelToken, ignore_progress
from agentbox.model.recording import RecordingIntegrity, RecordingKind
from agentbox.tui.dashboard import EMPTY_TEXT
from agentbox.tui.dialogs import ConfirmScreen, ErrorScreen, TypeNameScreen
from agentbox.tui.terminal import SuspendedTerminal

from .conftest import FIXED_NOW, TuiWorld, screen_text, settle


def status(pilot) -> str:  # type: ignore[no-untyped-def]
    return str(pilot.app.screen.query_one("#status").content)


def test_start_boots_a_stopped_workspace_and_waits_for_ssh(world: TuiWorld) -> None:
    world.make("demo", running=False)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("s")
        await settle(pilot)
        assert world.state("demo") is DomainState.RUNNING
        assert world.events("demo")[-1] == "started"
        assert re.fullmatch(r"demo started in \d+\.\d s", status(pilot))
        assert "● running" in screen_text(pilot)

    world.run(scenario)


def test_a_running_workspace_without_its_supervisor_says_so_and_is_repaired(world: TuiWorld) -> None:
    world.make("demo")
    world.make("fine")
    world.egress.running.discard("demo")  # its supervisor was killed: the VM runs without egress

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        text = screen_text(pilot)  # the details pane wraps its lines
        assert "reaches now: none (fail closed): its" in text and "supervisor is not running (agentbox" in text
        assert pilot.app.screen.query_one("#do-repair").display
        await pilot.press("p")
        await settle(pilot)
        assert "demo" in world.egress.running and world.events("demo")[-1] == "repaired"
        assert status(pilot) == "demo repaired: its supervisor and egress are back"
        await pilot.press("down")  # a healthy workspace offers no repair
        await settle(pilot)
        assert not pilot.app.screen.query_one("#do-repair").display
        assert "p Repair" not in screen_text(pilot)

    world.run(scenario)


def test_stop_shuts_a_running_workspace_down(world: TuiWorld) -> None:
    world.make("demo")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.click("#do-stop")  # the button does what the key does
        await settle(pilot)
        assert world.state("demo") is DomainState.STOPPED
        assert world.events("demo")[-1] == "stopped"
        assert "○ stopped" in screen_text(pilot)
        assert "demo stopped in" in status(pilot)

    world.run(scenario)


def test_reset_asks_first_then_reverts_and_says_how_long_it_took(world: TuiWorld) -> None:
    world.make("demo")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("r")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ConfirmScreen)
        assert "demo goes back to its clean state" in screen_text(pilot)
        assert ("revert_snapshot", world.domain("demo")) not in world.backend.calls  # nothing before the yes
        await pilot.press("y")
        await settle(pilot)
        assert ("revert_snapshot", world.domain("demo")) in world.backend.calls
        assert world.events("demo")[-1] == "reset"
        record = world.ctx.records.load(name="demo")
        assert record is not None and record.last_reset == FIXED_NOW.isoformat(timespec="seconds")
        assert re.fullmatch(r"demo back to its clean state in \d+\.\d s, from the snapshot", status(pilot))
        assert re.search(r"demo +● running +- +tiny +⊘ off +just now", screen_text(pilot))

    world.run(scenario)


def test_declining_the_reset_changes_nothing(world: TuiWorld) -> None:
    world.make("demo")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("r")
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        assert not isinstance(pilot.app.screen, ConfirmScreen)
        assert ("revert_snapshot", world.domain("demo")) not in world.backend.calls
        assert "reset" not in world.events("demo")

    world.run(scenario)


def test_a_failing_operation_shows_the_message_not_a_traceback(world: TuiWorld) -> None:
    world.make("demo")
    world.backend.fail_on.add("revert_snapshot")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("r", "y")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ErrorScreen)
        text = screen_text(pilot)
        assert "Resetting demo failed" in text
        assert "injected failure in revert_snapshot" in text
        assert "Traceback" not in text
        await pilot.press("enter")
        await settle(pilot)
        assert not isinstance(pilot.app.screen, ErrorScreen)
        assert status(pilot).startswith("✗ Resetting demo failed")

    world.run(scenario)


def test_end_session_asks_then_ends_it_with_a_reset(world: TuiWorld) -> None:
    world.make("demo")
    world.services.sessions.start(name="demo", max_minutes=None, on_progress=ignore_progress, cancel=CancelToken())

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        assert "since 09:30, no time limit" in screen_text(pilot)
        await pilot.press("e")
        await settle(pilot)
        assert "End the session of demo?" in screen_text(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert world.services.sessions.current(name="demo") is None
        assert world.events("demo")[-2:] == ["reset", "session.ended"]
        assert status(pilot).startswith("session ended after 0.0 s; demo back to its clean state in")
        text = screen_text(pilot)
        assert re.search(r"Session +none", text)
        assert "e End session" not in text  # no session left to end

    world.run(scenario)


def test_open_shell_hands_the_terminal_to_the_workspaces_ssh_command(world: TuiWorld) -> None:
    world.make("demo")
    world.terminal.exit_code = 3

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("o")
        await settle(pilot)
        expected = world.services.workspaces.ssh_command(name="demo", command=[])
        assert world.terminal.ran == [expected]
        assert expected[0] == "ssh" and expected[-1] == "agentbox-demo"
        assert status(pilot) == "shell in demo closed (exit code 3)"
        await pilot.press("enter")  # Enter on the row does the same
        await settle(pilot)
        assert world.terminal.ran == [expected, expected]
        assert world.terminal.recorded == 2  # record_sessions is on by default
        await pilot.click("#workspaces", offset=(2, 1))  # clicks on the row only select it
        await pilot.click("#workspaces", offset=(2, 1))
        await settle(pilot)
        assert world.terminal.ran == [expected, expected]

    world.run(scenario)


def test_a_shell_opened_from_the_tui_is_recorded(world: TuiWorld) -> None:
    world.make("demo")
    world.terminal.call_run = True  # the system ssh really runs (against a fake guest nobody answers for)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("o")
        await settle(pilot)
        (summary,) = world.services.recordings.list(name="demo")
        assert summary.kind is RecordingKind.SHELL and summary.integrity is RecordingIntegrity.MATCHES
        assert status(pilot).startswith("shell in demo closed (exit code ")

    world.run(scenario)


def test_open_shell_where_the_terminal_cannot_be_handed_over_says_what_to_run(world: TuiWorld) -> None:
    world.make("demo")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("o")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ErrorScreen)
        text = screen_text(pilot)
        assert "this terminal cannot be handed over to ssh from the TUI" in text
        assert "What to do: run it in another terminal: ssh -F" in text

    world.run(scenario, app=world.app(terminal=SuspendedTerminal()))  # Pilot's headless terminal cannot suspend


def test_copy_ssh_command_puts_it_on_the_clipboard_and_says_so(world: TuiWorld) -> None:
    world.make("demo")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("c")
        await settle(pilot)
        config = world.ctx.records.files(name="demo").ssh_config
        assert pilot.app.clipboard == f"ssh -F {config} -t agentbox-demo"
        assert status(pilot) == f"copied: ssh -F {config} -t agentbox-demo"
        assert [n.title for n in pilot.app._notifications] == ["SSH command copied"]

    world.run(scenario)


def test_an_action_on_a_workspace_stopped_behind_the_tuis_back_explains_itself(world: TuiWorld) -> None:
    world.make("demo")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        world.backend.set_state(world.domain("demo"), DomainState.STOPPED)  # not reloaded yet
        await pilot.press("c")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ErrorScreen)
        text = screen_text(pilot)
        assert "workspace 'demo' is not running" in text
        assert "What to do: agentbox start demo" in text
        assert pilot.app.clipboard == ""

    world.run(scenario)


def test_destroy_needs_the_name_typed_then_removes_everything(world: TuiWorld) -> None:
    world.make("demo")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("d")
        await settle(pilot)
        dialog = pilot.app.screen
        assert isinstance(dialog, TypeNameScreen)
        await pilot.press(*"dem")
        assert dialog.query_one("#destroy", Button).disabled
        await pilot.press("enter")  # a wrong name does nothing
        await settle(pilot)
        assert pilot.app.screen is dialog and world.state("demo") is not None
        await pilot.press("o", "enter")
        await settle(pilot)
        assert world.state("demo") is None
        assert world.ctx.records.names() == ()
        assert world.events("demo")[-1] == "destroyed"
        assert EMPTY_TEXT in screen_text(pilot)
        assert status(pilot) == "demo destroyed (its audit log is kept)"

    world.run(scenario)


def test_escape_leaves_destroy_without_destroying(world: TuiWorld) -> None:
    world.make("demo")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("d")
        await settle(pilot)
        pilot.app.screen.query_one(Input).value = "demo"
        await pilot.press("escape")
        await settle(pilot)
        assert world.state("demo") is DomainState.RUNNING

    world.run(scenario)


def test_the_panic_key_cuts_keeps_evidence_and_resets_without_asking(world: TuiWorld) -> None:
    world.make("demo")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("exclamation_mark")
        await settle(pilot)
        assert not isinstance(pilot.app.screen, ConfirmScreen)  # nothing to answer
        for _ in range(50):
            if "network cut after" in status(pilot):
                break
            await pilot.pause(0.1)
        assert "network cut after" in status(pilot) and "evidence" in status(pilot)
        assert world.services.network.policy(name="demo").mode.value == "off"
        (kept,) = world.services.panic.evidence(name="demo")
        assert kept.files

    world.run(scenario)
