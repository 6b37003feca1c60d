"""Agents in the TUI: the wizard's first question, the dashboard's agent column, and the
agent terminal (t, or Enter on an agent workspace) whose session ends when it closes."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from textual.widgets import Input, Select

from agentbox.model.progress import CancelToken, ignore_progress
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.tui.actions import BY_ACTION
from agentbox.tui.key_screen import KeyScreen
from agentbox.tui.wizard import PLAIN_VM, NewWorkspaceScreen, run_choices

from .conftest import TuiWorld, screen_text, settle
from .test_wizard import open_wizard

AGENT = ("agent:\n  command: claude\n  description: Claude Code, Anthropic's coding agent\n"
         "  providers: [anthropic]\n  api_hosts: [api.anthropic.com]\n")


def add_agent_template(world: TuiWorld) -> None:
    templates = world.ctx.paths.user_templates_dir
    tiny = (templates / "tiny.yaml").read_text()
    (templates / "coder.yaml").write_text(tiny.replace("name: tiny", "name: coder")
                                          .replace("a tiny test image", "tiny, with an agent") + AGENT)


def make_agent_workspace(world: TuiWorld, name: str = "bot") -> None:
    add_agent_template(world)
    create_workspace(ctx=world.ctx, request=CreateRequest(name=name, template="coder"),
                     on_progress=ignore_progress, cancel=CancelToken())


def test_the_wizard_asks_first_what_to_run_and_an_agent_picks_its_template(world: TuiWorld) -> None:
    add_agent_template(world)
    world.services.keys.set(provider="anthropic", key="sk-ant-already-stored")  # no key step here

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("n")
        await settle(pilot)
        wizard = pilot.app.screen
        assert isinstance(wizard, NewWorkspaceScreen)
        what = wizard.query_one("#what", Select)
        assert what.has_focus and what.value == PLAIN_VM  # the settings' default template has no agent
        await pilot.press("enter")  # the choices, each agent with its one-line description
        await pilot.pause()
        text = screen_text(pilot)
        assert "Claude Code, Anthropic's coding agent" in text
        assert "A plain VM, no agent" in text
        values = [value for _, value in run_choices(tuple(wizard._templates.values()))]
        assert values[-1] == PLAIN_VM  # agents first, then the plain VM
        await pilot.press(*["up"] * (len(values) - 1 - values.index("coder")), "enter")
        await pilot.pause()
        assert wizard.query_one("#template", Select).value == "coder"
        assert wizard.query_one("#name", Input).has_focus  # the next question
        assert "coder: Claude Code, Anthropic's coding agent (starts `claude`)" in screen_text(pilot)
        await pilot.press(*"bot", "enter")
        await settle(pilot)
        record = world.ctx.records.load(name="bot")
        assert record is not None and record.template == "coder"
        assert re.search(r"bot is ready \(\d+\.\d s\): press t \(or Enter\) for coder", screen_text(pilot))

    world.run(scenario)


def test_the_wizard_result_names_the_keys_the_agent_needs(world: TuiWorld) -> None:
    add_agent_template(world)
    world.services.keys.set(provider="anthropic", key="sk-ant-already-stored")  # no key step here
    results = []

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        screen = NewWorkspaceScreen(services=world.services, taken=frozenset())
        await pilot.app.push_screen(screen, results.append)
        await settle(pilot)
        screen.query_one("#what", Select).value = "coder"
        await pilot.pause()
        await pilot.press(*"bot", "enter")
        await settle(pilot)

    world.run(scenario)
    assert [(r.request.template, r.providers) for r in results] == [("coder", ("anthropic",))]


KEY = "sk-ant-wizard-0123456789abcdef"


def files_containing(root: Path, text: str) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and text.encode() in p.read_bytes())


def test_a_missing_key_is_asked_for_masked_and_stored_on_the_host_only(world: TuiWorld, tmp_path: Path) -> None:
    add_agent_template(world)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await open_wizard(pilot, run="coder")
        await pilot.press(*"bot", "enter")
        await settle(pilot)
        prompt = pilot.app.screen
        assert isinstance(prompt, KeyScreen)  # anthropic has no key yet: asked before the create
        text = screen_text(pilot)
        assert "coder needs an API key for anthropic" in text
        assert "The key stays on this computer" in text and "per-session token" in text  # (wrapped)
        field = prompt.query_one("#api-key", Input)
        assert field.has_focus and field.password
        await pilot.press("enter")  # nothing typed yet
        await pilot.pause()
        assert isinstance(pilot.app.screen, KeyScreen) and "paste the key first" in screen_text(pilot)
        await pilot.press(*KEY)
        await pilot.pause()
        assert KEY not in screen_text(pilot) and KEY[:6] not in screen_text(pilot)  # masked
        await pilot.press("enter")
        await settle(pilot)
        assert world.ctx.records.load(name="bot") is not None  # then the create ran
        assert KEY not in screen_text(pilot)

    world.run(scenario)
    assert world.services.keys.get(provider="anthropic") == KEY  # the store `agentbox key set` uses
    [stored] = world.services.keys.list()
    assert (stored.provider, stored.store) == ("anthropic", "file")
    # Only the key file has it: not the audit log, the error log, the workspace or its disks.
    assert files_containing(tmp_path, KEY) == ["root/config/api-keys.json"]
    assert (world.ctx.paths.config_dir / "api-keys.json").stat().st_mode & 0o777 == 0o600


def test_the_key_step_can_be_skipped_and_the_workspace_is_made_anyway(world: TuiWorld) -> None:
    add_agent_template(world)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await open_wizard(pilot, run="coder")
        await pilot.press(*"bot", "enter")
        await settle(pilot)
        assert isinstance(pilot.app.screen, KeyScreen)
        await pilot.press(*"half-typed", "escape")  # skip: what was typed is dropped
        await settle(pilot)
        assert world.ctx.records.load(name="bot") is not None

    world.run(scenario)
    assert world.services.keys.list() == ()


def test_a_stored_key_is_not_asked_for_again(world: TuiWorld) -> None:
    add_agent_template(world)
    world.services.keys.set(provider="anthropic", key=KEY)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await open_wizard(pilot, run="coder")
        await pilot.press(*"bot", "enter")
        await settle(pilot)
        assert not isinstance(pilot.app.screen, KeyScreen)
        assert world.ctx.records.load(name="bot") is not None

    world.run(scenario)


def test_choosing_a_plain_vm_after_an_agent_goes_back_to_a_template_without_one(world: TuiWorld) -> None:
    add_agent_template(world)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        wizard = await open_wizard(pilot, run="coder")
        assert wizard.query_one("#template", Select).value == "coder"
        wizard.query_one("#what", Select).value = PLAIN_VM
        await pilot.pause()
        assert wizard.query_one("#template", Select).value == "tiny"

    world.run(scenario)


def test_the_dashboard_shows_which_agent_a_workspace_runs(world: TuiWorld) -> None:
    world.make("plain")
    make_agent_workspace(world)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        text = screen_text(pilot)
        assert re.search(r"bot +● running +coder +coder", text)  # agent column, then template
        assert re.search(r"plain +● running +- +tiny", text)

    world.run(scenario)


def test_the_agent_key_opens_the_agent_and_closing_it_ends_the_session(world: TuiWorld) -> None:
    make_agent_workspace(world)
    world.terminal.exit_code = 0

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        await pilot.press(BY_ACTION["agent"].key)
        await settle(pilot)
        [argv] = world.terminal.ran
        assert argv[0] == "ssh" and "-t" in argv and argv[-2] == "agentbox-bot"
        assert shlex.split(argv[-1])[:2] == ["bash", "-lc"] and "exec claude" in argv[-1]
        assert world.services.sessions.current(name="bot") is None  # it ended when the terminal closed
        assert {"agent.terminal", "agent.terminal_closed", "session.ended", "reset"} <= set(world.events("bot"))
        assert re.search(r"coder in bot closed \(exit code 0\); session ended after .*", screen_text(pilot))
        await pilot.press("enter")  # Enter on an agent workspace's row opens the agent too
        await settle(pilot)
        assert len(world.terminal.ran) == 2 and world.terminal.ran[1][-1] == argv[-1]

    world.run(scenario)


def test_a_plain_workspace_has_no_agent_action_and_enter_opens_its_shell(world: TuiWorld) -> None:
    world.make("plain")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        await pilot.press(BY_ACTION["agent"].key)
        await settle(pilot)
        assert world.terminal.ran == []
        await pilot.press("enter")
        await settle(pilot)
        assert world.terminal.ran == [world.services.workspaces.ssh_command(name="plain", command=[])]

    world.run(scenario)
