"""How commands reach the helpers behind a workspace's network: the egress proxy
(`python -m agentbox.egress`) and the SSH forward into the guest (`python -m
agentbox.remote`), both children of the workspace's supervisor (services/supervisor.py).

Commands never start or kill a helper themselves: they start the supervisor, ask it to
hold the forward down (around a snapshot or a reset), or stop it; they read its state file
to see what runs. Services reach this through the EgressRunner protocol, so services tests
can use a recording stand-in where no guest answers SSH.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agentbox.config.paths import ROOT_ENV, AppPaths
from agentbox.egress.client import ApprovalStream, EgressControlClient, PolicyChange
from agentbox.errors import EgressError
from agentbox.host.process_identity import is_alive, python_module_argv, spawn_detached, terminate
from agentbox.model.network import NetworkPolicy
from agentbox.remote.forward import read_state
from agentbox.stores.records import WorkspaceFiles, WorkspaceRecord
from agentbox.host.supervision_files import SUPERVISOR_MODULE, SupervisorFiles

READY_TIMEOUT_S = 20.0
RESPAWN_EVERY_S = 1.0


@dataclass(frozen=True)
class EgressHealth:
    proxy_running: bool
    forward_connected: bool
    gateway_running: bool = False  # the credential gateway listens
    supervised: bool = False  # a supervisor runs for the workspace
    problem: str = ""  # what the supervisor cannot fix by retrying


class EgressRunner(Protocol):
    def ensure_running(self, *, record: WorkspaceRecord, files: WorkspaceFiles) -> None:
        """Start what is not running; return once the proxy listens and the forward is up."""

    def start(self, *, record: WorkspaceRecord, files: WorkspaceFiles, forward_down: bool) -> None:
        """Start the supervisor (with its proxy and gateway) if none runs, without waiting for
        it, so its start-up overlaps the caller's own work until ensure_running. With
        `forward_down` (create, before the clean snapshot) the forward stays down until then."""

    def stop(self, *, files: WorkspaceFiles, forward_only: bool = False) -> None:
        """Everything (the VM goes down), or only the forward until the next ensure_running."""

    def hold_through_power_cycle(self, *, files: WorkspaceFiles, forward_down: bool = False) -> None:
        """The VM is about to go down and come back (a reset): its supervisor must not end
        meanwhile, until the next ensure_running. The forward reconnects by itself, or with
        `forward_down` (a standby swap: the old guest still answers until it is destroyed)
        stays down until then."""

    def health(self, *, files: WorkspaceFiles) -> EgressHealth:
        """What runs now; reads files only, starts and stops nothing."""

    def set_policy(self, *, files: WorkspaceFiles, policy: NetworkPolicy) -> PolicyChange:
        """Swap the running proxy's policy (it persists it); returns what it cut."""

    def approvals(self, *, files: WorkspaceFiles) -> ApprovalStream:
        """Become an approver of the running proxy: its held connections arrive to be answered."""


class SupervisedEgress:
    def __init__(self, *, paths: AppPaths) -> None:
        self._paths = paths
        self._spawned: dict[str, float] = {}  # workspace → when this process last started its supervisor

    def start(self, *, record: WorkspaceRecord, files: WorkspaceFiles, forward_down: bool) -> None:
        files.egress_dir.mkdir(mode=0o700, exist_ok=True)
        sup = SupervisorFiles(egress_dir=files.egress_dir)
        if forward_down:
            sup.place_hold(reason="a create", forward_down=True)
        else:
            sup.release_hold()
        recent = time.monotonic() - self._spawned.get(record.name, -RESPAWN_EVERY_S) < RESPAWN_EVERY_S
        if not recent and not self.health(files=files).supervised:
            self._spawn(name=record.name, sup=sup)

    def ensure_running(self, *, record: WorkspaceRecord, files: WorkspaceFiles) -> None:
        files.egress_dir.mkdir(mode=0o700, exist_ok=True)
        sup = SupervisorFiles(egress_dir=files.egress_dir)
        sup.release_hold()
        # One started by `start` may still be importing (no state file yet): not a second one at once.
        last_spawn = self._spawned.get(record.name, 0.0)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            health = self.health(files=files)
            if health.problem:
                raise EgressError(f"egress of {record.name!r} is down: {health.problem}",
                                  hint=f"the guest has no egress (fail closed); see {sup.log}")
            if health.proxy_running and health.forward_connected and health.gateway_running:
                return
            # A supervisor that is ending (its VM was down a moment ago) lets go of its lock
            # soon; a new one started meanwhile finds the lock taken and leaves at once.
            if not health.supervised and time.monotonic() - last_spawn >= RESPAWN_EVERY_S:
                self._spawn(name=record.name, sup=sup)
                last_spawn = self._spawned[record.name]
            if time.monotonic() > deadline:
                raise EgressError(f"the egress of {record.name!r} did not come up within {READY_TIMEOUT_S:.0f} s"
                                  + _tail(files.egress_dir / "forward.log", files.egress_dir / "proxy.log",
                                          files.egress_dir / "gateway.log", sup.log),
                                  hint=f"the guest has no egress until it does (fail closed); see {sup.log}")
            time.sleep(0.05)

    def stop(self, *, files: WorkspaceFiles, forward_only: bool = False) -> None:
        sup = SupervisorFiles(egress_dir=files.egress_dir)
        if forward_only:
            self._hold(sup=sup)
            return
        state = sup.read_state()
        supervisor = sup.supervisor()
        if supervisor is not None:
            terminate(supervisor, timeout_s=10.0)  # it stops its helpers on the way out
        for helper in (state.proxy, state.forward, state.gateway) if state else ():
            if helper is not None:
                terminate(helper)  # only if the supervisor was killed before it could
        sup.release_hold()
        (files.egress_dir / "forward.state").unlink(missing_ok=True)

    def hold_through_power_cycle(self, *, files: WorkspaceFiles, forward_down: bool = False) -> None:
        SupervisorFiles(egress_dir=files.egress_dir).place_hold(reason="a reset", forward_down=forward_down)

    def health(self, *, files: WorkspaceFiles) -> EgressHealth:
        state = SupervisorFiles(egress_dir=files.egress_dir).read_state()
        if state is None:
            return EgressHealth(proxy_running=False, forward_connected=False)
        forward = read_state(path=files.egress_dir / "forward.state")
        return EgressHealth(proxy_running=is_alive(state.proxy),
                            forward_connected=bool(forward and forward.connected and is_alive(state.forward)),
                            gateway_running=is_alive(state.gateway),
                            supervised=True, problem=state.problem)

    def set_policy(self, *, files: WorkspaceFiles, policy: NetworkPolicy) -> PolicyChange:
        return EgressControlClient(socket_path=files.egress_dir / "control.sock").set_policy(policy=policy)

    def approvals(self, *, files: WorkspaceFiles) -> ApprovalStream:
        return EgressControlClient(socket_path=files.egress_dir / "control.sock").approvals()

    def _hold(self, *, sup: SupervisorFiles) -> None:
        """Hold the forward down and return once it is (a snapshot must not contain it)."""
        sup.place_hold(reason="a snapshot", forward_down=True)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            state = sup.read_state()
            if state is None or (state.held and not is_alive(state.forward)):
                return
            if time.monotonic() > deadline:
                raise EgressError("the SSH forward did not stop within "
                                  f"{READY_TIMEOUT_S:.0f} s", hint=f"see {sup.log}")
            time.sleep(0.05)

    def _spawn(self, *, name: str, sup: SupervisorFiles) -> None:
        env = dict(os.environ)
        if self._paths.root is not None:
            env[ROOT_ENV] = str(self._paths.root)
        spawn_detached(argv=python_module_argv(SUPERVISOR_MODULE, name), log_file=sup.log, env=env)
        self._spawned[name] = time.monotonic()


def _tail(*logs: Path) -> str:
    lines: list[str] = []
    for log in logs:
        try:
            lines += log.read_text(errors="replace").strip().splitlines()[-2:]
        except OSError:
            continue
    return (": " + " | ".join(lines[-4:])) if lines else ""
