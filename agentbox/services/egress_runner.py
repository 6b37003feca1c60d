"""The two helper processes behind a workspace's network: the egress proxy
(`python -m agentbox.egress`) and the SSH forward into the guest (`python -m
agentbox.remote`). Started detached, found again by PID file, restarted when dead.

Services reach them through the EgressRunner protocol, so services tests can use a
recording stand-in where no guest answers SSH.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agentbox.config.paths import AppPaths
from agentbox.config.settings import Settings
from agentbox.egress.client import ApprovalStream, EgressControlClient, PolicyChange
from agentbox.errors import EgressError
from agentbox.model.network import NetworkPolicy
from agentbox.remote.forward import read_state
from agentbox.services.processes import python_module_argv, running_pid, spawn_detached, terminate
from agentbox.services.records import WorkspaceFiles, WorkspaceRecord
from agentbox.services.ssh_access import ssh_target

PROXY_MODULE = "agentbox.egress"
FORWARD_MODULE = "agentbox.remote"
READY_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class EgressHealth:
    proxy_running: bool
    forward_connected: bool


class EgressRunner(Protocol):
    def ensure_running(self, *, record: WorkspaceRecord, files: WorkspaceFiles) -> None:
        """Start what is not running; return once the proxy listens and the forward is up."""

    def stop(self, *, files: WorkspaceFiles, forward_only: bool = False) -> None: ...

    def health(self, *, files: WorkspaceFiles) -> EgressHealth: ...

    def set_policy(self, *, files: WorkspaceFiles, policy: NetworkPolicy) -> PolicyChange:
        """Swap the running proxy's policy (it persists it); returns what it cut."""

    def approvals(self, *, files: WorkspaceFiles) -> ApprovalStream:
        """Become an approver of the running proxy: its held connections arrive to be answered."""


class ProcessEgressRunner:
    def __init__(self, *, settings: Settings, paths: AppPaths) -> None:
        self._settings = settings
        self._paths = paths

    def ensure_running(self, *, record: WorkspaceRecord, files: WorkspaceFiles) -> None:
        egress = files.egress_dir
        egress.mkdir(mode=0o700, exist_ok=True)
        if running_pid(pid_file=egress / "proxy.pid", marker=PROXY_MODULE) is None:
            self._start_proxy(record=record, files=files)
        if running_pid(pid_file=egress / "forward.pid", marker=FORWARD_MODULE) is None:
            self._start_forward(record=record, files=files)
        _wait(lambda: self.health(files=files).forward_connected, what="the SSH forward into the guest",
              log=egress / "forward.log")

    def stop(self, *, files: WorkspaceFiles, forward_only: bool = False) -> None:
        egress = files.egress_dir
        targets = ((FORWARD_MODULE, "forward.pid"),) if forward_only else (
            (FORWARD_MODULE, "forward.pid"), (PROXY_MODULE, "proxy.pid"))
        for module, pid_file in targets:
            pid = running_pid(pid_file=egress / pid_file, marker=module)
            if pid is not None:
                terminate(pid=pid, marker=module)
        (egress / "forward.state").unlink(missing_ok=True)

    def health(self, *, files: WorkspaceFiles) -> EgressHealth:
        egress = files.egress_dir
        proxy = running_pid(pid_file=egress / "proxy.pid", marker=PROXY_MODULE) is not None
        state = read_state(path=egress / "forward.state")
        forward = bool(state and state.connected
                       and running_pid(pid_file=egress / "forward.pid", marker=FORWARD_MODULE) is not None)
        return EgressHealth(proxy_running=proxy, forward_connected=forward)

    def set_policy(self, *, files: WorkspaceFiles, policy: NetworkPolicy) -> PolicyChange:
        return EgressControlClient(socket_path=files.egress_dir / "control.sock").set_policy(policy=policy)

    def approvals(self, *, files: WorkspaceFiles) -> ApprovalStream:
        return EgressControlClient(socket_path=files.egress_dir / "control.sock").approvals()

    def _start_proxy(self, *, record: WorkspaceRecord, files: WorkspaceFiles) -> None:
        egress = files.egress_dir
        for leftover in ("proxy.sock", "control.sock"):
            (egress / leftover).unlink(missing_ok=True)
        pins = [arg for name, address in self._settings.egress_hosts for arg in ("--pin", f"{name}={address}")]
        argv = python_module_argv(
            PROXY_MODULE, "--proxy-socket", str(egress / "proxy.sock"), "--control-socket",
            str(egress / "control.sock"), "--policy-file", str(files.policy), "--log-file", str(files.net_log),
            "--pid-file", str(egress / "proxy.pid"), "--audit-log", str(self._paths.audit_log(record.name)),
            *pins)
        spawn_detached(argv=argv, log_file=egress / "proxy.log", env=os.environ)
        _wait(lambda: running_pid(pid_file=egress / "proxy.pid", marker=PROXY_MODULE) is not None,
              what="the egress proxy", log=egress / "proxy.log")

    def _start_forward(self, *, record: WorkspaceRecord, files: WorkspaceFiles) -> None:
        egress = files.egress_dir
        (egress / "forward.state").unlink(missing_ok=True)
        target = ssh_target(record=record, files=files)
        argv = python_module_argv(
            FORWARD_MODULE, "--port", str(target.port), "--user", target.user, "--key", str(target.private_key),
            "--host-key", target.host_key, "--proxy-socket", str(egress / "proxy.sock"),
            "--state-file", str(egress / "forward.state"), "--pid-file", str(egress / "forward.pid"))
        spawn_detached(argv=argv, log_file=egress / "forward.log", env=os.environ)


def _wait(ready: Callable[[], bool], *, what: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready():
        if time.monotonic() > deadline:
            try:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            except OSError:
                tail = []
            raise EgressError(f"{what} did not come up within {READY_TIMEOUT_S:.0f} s"
                              + (": " + " | ".join(tail) if tail else ""),
                              hint=f"the guest has no egress until it does (fail closed); see {log}")
        time.sleep(0.05)
