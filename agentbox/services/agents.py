"""Agent terminals: a TTY over SSH, as the guest user, with the template's agent running
in the project folder (the first share), inside a session.

The agent starts in a login shell (`bash -lc`), so /etc/profile.d is read: that is where
the credential gateway puts the agent's base URLs and its per-session token, and where the
agent templates switch off self-updates (cloud-init/agents.yaml). The terminal opens a
session unless one is already running; when the terminal closes, a session it opened ends
as the template's policy says (reset, or state kept), with its receipt.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from agentbox.errors import InvalidInput, NotFound
from agentbox.model.agent import AgentSpec
from agentbox.model.progress import CancelToken, ProgressCallback
from agentbox.services.context import ServiceContext
from agentbox.services.lookup import load_ready_record
from agentbox.services.sessions import Session, SessionEnd, SessionService
from agentbox.services.shares import GUEST_SHARES, ShareService
from agentbox.services.ssh_access import ssh_argv
from agentbox.stores.records import WorkspaceRecord

HOME = "~"  # where an agent starts when the workspace has no share


@dataclass(frozen=True)
class AgentTerminal:
    workspace: str
    agent: AgentSpec
    folder: str  # where the agent starts in the guest: /mnt/shares/TAG, or ~
    argv: tuple[str, ...]  # the system ssh, with a TTY
    session: Session
    own_session: bool  # opened for this terminal, so ended when it closes


class AgentService:
    def __init__(self, *, ctx: ServiceContext, sessions: SessionService, shares: ShareService) -> None:
        self._ctx = ctx
        self._sessions = sessions
        self._shares = shares

    def agents(self, *, name: str) -> tuple[AgentSpec, ...]:
        """The agents of the workspace's template (empty for a plain VM)."""
        return self._template_agents(load_ready_record(ctx=self._ctx, name=name))

    def open(self, *, name: str, agent: str | None, on_progress: ProgressCallback,
             cancel: CancelToken) -> AgentTerminal:
        """Start the workspace and a session if needed; return the terminal to run.

        The caller runs `argv` in the user's terminal, then calls `close`."""
        record = load_ready_record(ctx=self._ctx, name=name)
        spec = _pick(self._template_agents(record), wanted=agent, workspace=name, template=record.template)
        session = self._sessions.current(name=name)
        own = session is None
        if session is None:
            session = self._sessions.start(name=name, max_minutes=None, on_progress=on_progress, cancel=cancel)
        try:
            folder = self._project_folder(name=name)
            argv = ssh_argv(record=record, files=self._ctx.records.files(name=name),
                            command=[launch_command(agent=spec, folder=folder)], tty=True)
            self._ctx.audit(name=name).append(event="agent.terminal", details={
                "agent": spec.name, "folder": folder, "session": session.id})
        except BaseException:
            if own:  # nothing is left half-open: the session this call began ends again
                self._sessions.end(name=name, reason="the agent terminal could not open", session_id=session.id,
                                   on_progress=on_progress, cancel=CancelToken())
            raise
        return AgentTerminal(workspace=name, agent=spec, folder=folder, argv=tuple(argv), session=session,
                             own_session=own)

    def close(self, *, terminal: AgentTerminal, exit_code: int, on_progress: ProgressCallback,
              cancel: CancelToken) -> SessionEnd | None:
        """After the terminal exits: end the session it opened (None when it joined one, or
        the session already ended by other means)."""
        self._ctx.audit(name=terminal.workspace).append(event="agent.terminal_closed", details={
            "agent": terminal.agent.name, "exit_code": exit_code, "session": terminal.session.id})
        if not terminal.own_session:
            return None
        return self._sessions.end(name=terminal.workspace, reason=f"{terminal.agent.name} terminal closed",
                                  session_id=terminal.session.id, on_progress=on_progress, cancel=cancel)

    def _template_agents(self, record: WorkspaceRecord) -> tuple[AgentSpec, ...]:
        try:
            return self._ctx.catalogue.get(name=record.template).agents
        except NotFound:
            raise NotFound(f"workspace {record.name!r} was made from template {record.template!r}, which is gone",
                           hint=f"agentbox ssh {record.name} opens a plain shell") from None

    def _project_folder(self, *, name: str) -> str:
        shares = self._shares.list(name=name)
        return f"{GUEST_SHARES}/{shares[0].share.tag}" if shares else HOME


def launch_command(*, agent: AgentSpec, folder: str) -> str:
    """The remote command: a login shell of the guest user (so /etc/profile.d is read) that
    goes to the folder and becomes the agent. A folder that is not there (a share not mounted
    yet) is said, and the agent starts in the home instead of not at all."""
    if folder == HOME:
        script = f"cd && exec {agent.command}"
    else:
        place = shlex.quote(folder)
        script = (f"cd {place} 2>/dev/null || {{ echo {shlex.quote(f'agentbox: {folder} is not mounted;')}"
                  f" starting in the home >&2; cd; }}; exec {agent.command}")
    return shlex.join(["bash", "-lc", script])


def _pick(agents: tuple[AgentSpec, ...], *, wanted: str | None, workspace: str, template: str) -> AgentSpec:
    if not agents:
        raise InvalidInput(f"workspace {workspace!r} (template {template}) has no agent",
                           hint=f"agentbox ssh {workspace} opens a shell; agent templates: claude-code, codex, "
                           "aider, agents (agentbox template list)")
    if wanted is None:
        return agents[0]
    for spec in agents:
        if spec.name == wanted:
            return spec
    raise InvalidInput(f"workspace {workspace!r} has no agent {wanted!r}",
                       hint=f"its agents: {', '.join(spec.name for spec in agents)}")
