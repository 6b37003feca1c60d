"""What a workspace's supervisor and the commands that talk to it share: a few files in the
workspace's egress dir, each with one writer.

- `supervisor.lock`: flocked by the supervisor for its whole life, naming it (host/locks).
- `supervisor.json`: its state (helpers' identities, problem), written only on change.
- `hold.json`: written by a command that needs the supervisor to hold on for a while: through
  a reset's power cycle (the VM is down for seconds: do not end), or around a snapshot (the
  forward must be down too). It names the command's process, so a hold whose owner died
  counts for nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from agentbox.config.atomic_file import write_atomically
from agentbox.host.locks import holder
from agentbox.host.process_identity import ProcessIdentity, current_identity, is_alive

SUPERVISOR_MODULE = "agentbox.cli.supervise_command"  # `python -m ... NAME`
LOCK_FILE = "supervisor.lock"
STATE_FILE = "supervisor.json"
HOLD_FILE = "hold.json"


@dataclass(frozen=True)
class SupervisorState:
    workspace: str
    started: str  # ISO 8601 UTC
    proxy: ProcessIdentity | None = None  # set once it listens
    forward: ProcessIdentity | None = None
    gateway: ProcessIdentity | None = None  # the credential gateway, once it listens
    held: str = ""  # why the forward is held down ("" when it is not)
    problem: str = ""  # what keeps egress down that retrying will not fix (a host key mismatch)

    def to_json(self) -> dict[str, object]:
        return {"workspace": self.workspace, "started": self.started,
                "proxy": self.proxy.to_json() if self.proxy else None,
                "forward": self.forward.to_json() if self.forward else None,
                "gateway": self.gateway.to_json() if self.gateway else None,
                "held": self.held, "problem": self.problem}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> SupervisorState:
        return cls(workspace=str(data.get("workspace", "")), started=str(data.get("started", "")),
                   proxy=ProcessIdentity.from_json(data.get("proxy")),
                   forward=ProcessIdentity.from_json(data.get("forward")),
                   gateway=ProcessIdentity.from_json(data.get("gateway")),
                   held=str(data.get("held", "")), problem=str(data.get("problem", "")))


@dataclass(frozen=True)
class Hold:
    reason: str
    forward_down: bool  # a snapshot: the forward must not run; a reset: it reconnects by itself


@dataclass(frozen=True)
class SupervisorFiles:
    egress_dir: Path

    @property
    def lock(self) -> Path:
        return self.egress_dir / LOCK_FILE

    @property
    def state(self) -> Path:
        return self.egress_dir / STATE_FILE

    @property
    def hold(self) -> Path:
        return self.egress_dir / HOLD_FILE

    @property
    def log(self) -> Path:
        return self.egress_dir / "supervisor.log"

    def supervisor(self) -> ProcessIdentity | None:
        """The live supervisor, if there is one (read without touching its lock)."""
        return holder(path=self.lock)

    def read_state(self) -> SupervisorState | None:
        """The live supervisor's state; None when no supervisor runs."""
        if self.supervisor() is None:
            return None
        try:
            data = json.loads(self.state.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return SupervisorState.from_json(data) if isinstance(data, dict) else None

    def write_state(self, state: SupervisorState) -> None:
        write_atomically(path=self.state, data=(json.dumps(state.to_json()) + "\n").encode())

    def place_hold(self, *, reason: str, forward_down: bool) -> None:
        write_atomically(path=self.hold, data=(json.dumps(
            {"owner": current_identity().to_json(), "reason": reason, "forward_down": forward_down}) + "\n").encode())

    def active_hold(self) -> Hold | None:
        """The hold, if its owner still lives."""
        try:
            data = json.loads(self.hold.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or not is_alive(ProcessIdentity.from_json(data.get("owner"))):
            return None
        return Hold(reason=str(data.get("reason", "held")), forward_down=data.get("forward_down") is not False)

    def release_hold(self) -> None:
        self.hold.unlink(missing_ok=True)
