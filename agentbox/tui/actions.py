"""The dashboard's actions in one table: key, footer label, button, palette help, and when
each applies. Bindings, buttons and command-palette entries are all built from it, so a new
action is one row here plus its `action_*` method.

Not every action fits an 80-column footer: the footer shows the everyday ones (`footer`);
every action is also a button labelled with its key, a palette entry, and listed by `?`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from agentbox.model.workspace import WorkspaceState
from agentbox.tui.views import WorkspaceDetails


class Needs(Enum):
    NOTHING = "nothing"  # no workspace needed
    ANY = "any"  # any selected workspace, even a broken one
    READY = "ready"  # a complete workspace, running or not
    RUNNING = "running"
    STOPPED = "stopped"
    SESSION = "session"  # a workspace in a session
    REPAIR = "repair"  # a running workspace whose supervisor is gone (a killed process, a host restart)
    AGENT = "agent"  # a running workspace whose template has an agent
    BUDGET_PAUSED = "budget_paused"  # a workspace whose guest its session's budget paused


@dataclass(frozen=True)
class ActionSpec:
    action: str  # the screen's `action_<action>` method
    key: str
    label: str  # footer and button text
    help: str  # command-palette help
    needs: Needs
    button: bool = True  # also a button in the details pane
    footer: bool = True  # shown in the footer (keep those that apply at once within 80 columns)
    shown_key: str = ""  # how the key is written for people, when its Textual name is a word

    @property
    def key_text(self) -> str:
        return self.shown_key or self.key


DASHBOARD_ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("new", "n", "New", "Create a workspace (name, template, resources, folders, network)",
               Needs.NOTHING, button=False),
    ActionSpec("start", "s", "Start", "Start the workspace and wait for SSH", Needs.STOPPED),
    ActionSpec("repair", "p", "Repair", "Bring back the supervisor and egress of a running workspace",
               Needs.REPAIR),
    ActionSpec("resume", "u", "Resume", "Resume a guest its budget paused (refused while a budget is still "
               "exceeded: raise it with agentbox budget NAME first)", Needs.BUDGET_PAUSED),
    ActionSpec("stop", "x", "Stop", "Shut the workspace down", Needs.RUNNING),
    ActionSpec("agent", "t", "Agent", "Open a terminal with the workspace's agent in the project folder; "
               "leaving it ends the session", Needs.AGENT),
    ActionSpec("shell", "o", "Shell", "Open a shell in the workspace (returns when it exits)", Needs.RUNNING),
    ActionSpec("reset", "r", "Reset", "Return the workspace to its clean state (asks first)", Needs.READY),
    ActionSpec("end_session", "e", "End session", "End the session; the workspace is reset", Needs.SESSION),
    ActionSpec("standby", "y", "Standby", "Keep a paused clean copy ready so resets are a swap (on/off; one more "
               "guest's RAM)", Needs.READY, button=False, footer=False),
    ActionSpec("network", "w", "Network", "Choose the network mode: off, allowlist, learn or open", Needs.READY),
    ActionSpec("allowlist", "l", "Allowlist", "Edit the destinations allowed in allowlist mode", Needs.READY,
               footer=False),
    ActionSpec("net_log", "g", "Net log", "Every connection the agent tried, live", Needs.READY, footer=False),
    ActionSpec("shares", "f", "Shares", "Folders shared read-only into the workspace: add, remove", Needs.READY,
               footer=False),
    ActionSpec("outbox", "b", "Outbox", "Files the agent left in /mnt/outbox: list, export, clear", Needs.READY,
               footer=False),
    ActionSpec("copy_ssh", "c", "Copy SSH", "Copy the SSH command to the clipboard", Needs.RUNNING, footer=False),
    ActionSpec("checkpoints", "k", "Checkpoints", "Save, restore and delete checkpoints", Needs.READY,
               footer=False),
    ActionSpec("evidence", "v", "Evidence", "What panics kept (RAM and disk): restore one as a new workspace, "
               "remove one", Needs.ANY, footer=False),
    ActionSpec("audit", "a", "Audit", "The workspace's audit log, live", Needs.ANY, footer=False),
    ActionSpec("destroy", "d", "Destroy", "Remove the workspace (type its name to confirm)", Needs.ANY,
               footer=False),
    ActionSpec("panic", "exclamation_mark", "Panic", "Cut the network now, freeze the guest, keep its RAM and disk "
               "as evidence, then reset it (asks nothing)", Needs.READY, footer=False, shown_key="!"),
)
BY_ACTION = {spec.action: spec for spec in DASHBOARD_ACTIONS}


def applies(spec: ActionSpec, details: WorkspaceDetails | None) -> bool:
    if spec.needs is Needs.NOTHING:
        return True
    if details is None:
        return False
    match spec.needs:
        case Needs.ANY:
            return True
        case Needs.READY:
            return details.ready
        case Needs.RUNNING:
            return details.state is WorkspaceState.RUNNING
        case Needs.STOPPED:
            return details.state is WorkspaceState.STOPPED
        case Needs.SESSION:
            return details.ready and details.in_session
        case Needs.REPAIR:
            return details.state is WorkspaceState.RUNNING and details.needs_repair
        case Needs.AGENT:
            return details.state is WorkspaceState.RUNNING and bool(details.agents)
        case Needs.BUDGET_PAUSED:
            return details.state is WorkspaceState.PAUSED and bool(details.paused_by)
