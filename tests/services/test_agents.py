"""Agent terminals on the Fake backend: the agent starts in the project folder, in a login
shell, inside a session that ends (with its reset) when the terminal closes."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from agentbox.errors import InvalidInput
from agentbox.model.agent import AgentSpec
from agentbox.model.progress import CancelToken
from agentbox.services.agents import AgentService, launch_command
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.services.sessions import SessionService
from agentbox.services.shares import ShareService
from agentbox.services.snapshots import SnapshotService
from agentbox.services.workspaces import WorkspaceService

from .conftest import World

AGENTS = ("agent:\n  - {name: claude-code, command: claude, description: Claude Code, providers: [anthropic],"
          " api_hosts: [api.anthropic.com]}\n  - {name: aider, command: aider --no-git, description: Aider}\n")


@pytest.fixture()
def agent_world(world: World) -> World:
    tiny = (world.ctx.paths.user_templates_dir / "tiny.yaml").read_text()
    (world.ctx.paths.user_templates_dir / "coder.yaml").write_text(tiny.replace("name: tiny", "name: coder") + AGENTS)
    return world


def services(world: World) -> tuple[AgentService, SessionService]:
    sessions = SessionService(ctx=world.ctx, workspaces=WorkspaceService(ctx=world.ctx),
                              snapshots=SnapshotService(ctx=world.ctx))
    return AgentService(ctx=world.ctx, sessions=sessions, shares=ShareService(ctx=world.ctx)), sessions


def make(world: World, *, template: str = "coder", shares: tuple[str, ...] = ()) -> None:
    create_workspace(ctx=world.ctx, request=CreateRequest(name="ws", template=template, shares=shares),
                     on_progress=world.progress.append, cancel=CancelToken())


def events(world: World) -> list[str]:
    return [json.loads(line)["event"] for line in world.ctx.paths.audit_log("ws").read_text().splitlines()]


def open_terminal(agents: AgentService, agent: str | None = None):  # type: ignore[no-untyped-def]
    return agents.open(name="ws", agent=agent, on_progress=lambda _: None, cancel=CancelToken())


def test_the_agent_starts_in_the_first_share_and_its_session_ends_with_a_reset(agent_world: World,
                                                                               tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    make(agent_world, shares=(f"{project}:code",))
    agents, sessions = services(agent_world)
    terminal = open_terminal(agents)
    assert terminal.agent.name == "claude-code" and terminal.folder == "/mnt/shares/code"
    assert terminal.argv[:3] == ("ssh", "-F", str(agent_world.ctx.records.files(name="ws").ssh_config))
    assert "-t" in terminal.argv  # a TTY: the agent is interactive
    assert shlex.split(terminal.argv[-1])[:2] == ["bash", "-lc"]  # a login shell reads /etc/profile.d
    assert terminal.own_session and sessions.current(name="ws") == terminal.session
    end = agents.close(terminal=terminal, exit_code=0, on_progress=lambda _: None, cancel=CancelToken())
    assert end is not None and end.reset is not None  # the template's policy: reset after a session
    assert end.reason == "claude-code terminal closed"
    assert sessions.current(name="ws") is None
    seen = events(agent_world)
    assert seen.index("session.started") < seen.index("agent.terminal") < seen.index("agent.terminal_closed") \
        < seen.index("session.ended")


def test_an_open_session_stays_open_after_the_terminal(agent_world: World) -> None:
    make(agent_world)
    agents, sessions = services(agent_world)
    session = sessions.start(name="ws", max_minutes=None, on_progress=lambda _: None, cancel=CancelToken())
    terminal = open_terminal(agents, "aider")
    assert terminal.agent.command == "aider --no-git" and terminal.folder == "~"
    assert not terminal.own_session and terminal.session == session
    assert agents.close(terminal=terminal, exit_code=1, on_progress=lambda _: None, cancel=CancelToken()) is None
    assert sessions.current(name="ws") == session
    assert "reset" not in events(agent_world)


def test_a_plain_workspace_has_no_agent_and_says_how_to_get_a_shell(agent_world: World) -> None:
    make(agent_world, template="tiny")
    agents, sessions = services(agent_world)
    with pytest.raises(InvalidInput, match="has no agent") as info:
        open_terminal(agents)
    assert "agentbox ssh ws" in (info.value.hint or "")
    assert sessions.current(name="ws") is None  # nothing was opened


def test_an_unknown_agent_names_the_workspaces_agents(agent_world: World) -> None:
    make(agent_world)
    agents, sessions = services(agent_world)
    with pytest.raises(InvalidInput, match="no agent 'codex'") as info:
        open_terminal(agents, "codex")
    assert info.value.hint == "its agents: claude-code, aider"
    assert sessions.current(name="ws") is None


def _run_remote(command: str, *, home: Path) -> subprocess.CompletedProcess[str]:
    # What sshd does with the remote command: the user's shell runs it with -c.
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=False,
                          env={"HOME": str(home), "PATH": "/usr/bin:/bin"})


def test_the_launch_command_goes_to_the_folder_and_becomes_the_agent(tmp_path: Path) -> None:
    folder = tmp_path / "it's a project"
    folder.mkdir()
    agent = AgentSpec(name="a", command="echo started in \"$PWD\"; exec true", description="", providers=(),
                      api_hosts=())
    done = _run_remote(launch_command(agent=agent, folder=str(folder)), home=tmp_path)
    assert done.returncode == 0 and done.stdout == f"started in {folder}\n"


def test_a_folder_that_is_not_there_starts_the_agent_in_the_home_and_says_so(tmp_path: Path) -> None:
    agent = AgentSpec(name="a", command="pwd", description="", providers=(), api_hosts=())
    done = _run_remote(launch_command(agent=agent, folder="/mnt/shares/gone"), home=tmp_path)
    assert done.stdout == f"{tmp_path}\n"
    assert "agentbox: /mnt/shares/gone is not mounted; starting in the home" in done.stderr
