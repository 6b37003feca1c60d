"""One supervisor per running workspace: `python -m agentbox.cli.supervise_command NAME`, started with the VM
(by create, start, reset: whoever brings the VM up calls `ensure_running`) and ending with it.

It owns what lives beside the VM: the egress proxy and the SSH forward (its children,
which the kernel kills if the supervisor dies, so egress fails closed), and the session
deadline. It restarts a dead helper with backoff, stops retrying the forward on a host key
mismatch (and audits it), ends an overdue session as its policy says (receipt, then reset),
and stops everything when the domain stops. Its liveness is the lock it holds; its state
file is written only when something changes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from agentbox.backends.base import DomainState
from agentbox.config.paths import AppPaths
from agentbox.config.settings import Settings
from agentbox.errors import AgentboxError, Busy
from agentbox.model.budget import Exceeded
from agentbox.host.locks import held_lock
from agentbox.host.child_process import ChildProcess, SupervisedChild
from agentbox.host.process_identity import python_module_argv
from agentbox.remote.forward import HOST_KEY_MISMATCH_EXIT
from agentbox.services.context import ServiceContext
from agentbox.egress.budget import EGRESS_USAGE_FILE
from agentbox.stores.gateway_tokens import USAGE_FILE
from agentbox.stores.records import WorkspaceFiles, WorkspaceRecord
from agentbox.host.supervision_files import SupervisorFiles, SupervisorState
from agentbox.services.ssh_access import ssh_target

log = logging.getLogger(__name__)

PROXY_MODULE = "agentbox.egress"
GATEWAY_MODULE = "agentbox.gateway"
FORWARD_MODULE = "agentbox.remote"
TICK_S = 0.1  # how soon a dead helper or a hold is noticed
DOMAIN_EVERY_S = 1.0  # a libvirt round trip: not every tick
DOWN_CHECKS = 2  # consecutive "not running" answers before the supervisor ends (not one glitch)
SESSION_RETRY_S = 2.0

SessionEnder = Callable[[str, str], None]  # (workspace, session id): end it because its time is up
SessionReader = Callable[[str], tuple[str, str] | None]  # workspace → (session id, deadline ISO) or None
BudgetCheck = Callable[[str], tuple[str, Exceeded] | None]  # workspace → (session id, budget reached) or None
BudgetEnforcer = Callable[[str, str, Exceeded], None]  # (workspace, session id, budget): act on it


@dataclass(frozen=True)
class SupervisorExit:
    ran: bool  # False: another supervisor already runs for this workspace
    reason: str


class WorkspaceSupervisor:
    def __init__(self, *, ctx: ServiceContext, end_session: SessionEnder, read_session: SessionReader,
                 check_budget: BudgetCheck = lambda _name: None,
                 enforce_budget: BudgetEnforcer = lambda _name, _session, _exceeded: None) -> None:
        self._ctx = ctx
        self._end_session = end_session
        self._read_session = read_session
        self._check_budget = check_budget
        self._enforce_budget = enforce_budget

    def run(self, *, name: str, stop: threading.Event) -> SupervisorExit:
        ctx = self._ctx
        # Not load_ready_record: create brings egress up before it marks the record ready.
        record = ctx.records.load(name=name)
        if record is None:
            return SupervisorExit(ran=False, reason="no such workspace")
        files = ctx.records.files(name=name)
        files.egress_dir.mkdir(mode=0o700, exist_ok=True)
        sup = SupervisorFiles(egress_dir=files.egress_dir)
        try:
            with held_lock(path=sup.lock, busy=Busy(f"{name!r} already has a supervisor")):
                return self._supervise(record=record, files=files, sup=sup, stop=stop)
        except Busy:
            return SupervisorExit(ran=False, reason="another supervisor runs")

    def _supervise(self, *, record: WorkspaceRecord, files: WorkspaceFiles, sup: SupervisorFiles,
                   stop: threading.Event) -> SupervisorExit:
        ctx, name = self._ctx, record.name
        proxy = _proxy_helper(settings=ctx.settings, paths=ctx.paths, record=record, files=files)
        gateway = _gateway_helper(settings=ctx.settings, paths=ctx.paths, record=record, files=files)
        forward = _forward_helper(record=record, files=files)
        state = SupervisorState(workspace=name, started=ctx.clock().isoformat(timespec="seconds"))
        sup.write_state(state)
        audit = ctx.audit(name=name)
        audit.append(event="supervisor.started", details={"pid": os.getpid()})
        session_end = _SessionEnding()
        down, next_domain_check, reason = 0, 0.0, "stopped"
        domain = record.domain
        try:
            while not stop.is_set():
                now = time.monotonic()
                hold = sup.active_hold()
                if now >= next_domain_check:
                    next_domain_check = now + DOMAIN_EVERY_S
                    domain = self._recorded_domain(name=name, known=domain)  # a standby swap moves it
                    down = 0 if hold or self._domain_up(domain) else down + 1
                    if down >= DOWN_CHECKS:
                        reason = "the VM stopped"
                        break
                    self._check_session(name=name, ending=session_end)
                    self._check_budgets(name=name, ending=session_end)
                proxy.poll()
                proxy.start_if_due()
                gateway.poll()  # dead: nothing answers the guest's 3129 until it is back (fail closed)
                gateway.start_if_due()
                code = forward.poll()
                if code == HOST_KEY_MISMATCH_EXIT and not state.problem:
                    state = replace(state, problem="the guest's SSH host key does not match the pinned one:"
                                                   " the forward into it stays down")
                    audit.append(event="egress.host_key_mismatch", details={"helper": "forward"})
                if hold and hold.forward_down:
                    forward.stop()
                elif not state.problem:
                    forward.start_if_due()  # through a reset's power cycle it just reconnects
                new = replace(state, proxy=proxy.ready_identity(), forward=forward.ready_identity(),
                              gateway=gateway.ready_identity(),
                              held=hold.reason if hold else "")
                if new != state:
                    state = new
                    sup.write_state(state)
                stop.wait(TICK_S)
        finally:
            forward.stop()
            gateway.stop()
            proxy.stop()
            (files.egress_dir / "forward.state").unlink(missing_ok=True)
            sup.state.unlink(missing_ok=True)
            audit.append(event="supervisor.stopped", details={"reason": reason})
        return SupervisorExit(ran=True, reason=reason)

    def _recorded_domain(self, *, name: str, known: str) -> str:
        try:
            record = self._ctx.records.load(name=name)
        except AgentboxError:
            return known
        return record.domain if record is not None else known

    def _domain_up(self, domain: str) -> bool:
        try:
            info = self._ctx.backend.get(name=domain)
        except AgentboxError as exc:  # libvirtd restarting: the VM runs on; ask again
            log.warning("cannot read the domain's state: %s", exc.message)
            return True
        return info is not None and info.state in (DomainState.RUNNING, DomainState.PAUSED)

    def _check_session(self, *, name: str, ending: _SessionEnding) -> None:
        try:
            current = self._read_session(name)
        except AgentboxError:
            return
        if current is None or not current[1]:
            return
        session_id, deadline = current
        if datetime.fromisoformat(deadline) <= self._ctx.clock():
            ending.start(lambda: self._end_session(name, session_id), what=f"the overdue session {session_id}")

    def _check_budgets(self, *, name: str, ending: _SessionEnding) -> None:
        """Disk writes and CPU time are polled here; egress bytes the proxy cuts itself, and
        its count (its usage file) ends the session here."""
        if ending.busy:
            return
        try:
            reached = self._check_budget(name)
        except AgentboxError as exc:
            log.warning("cannot read the session's budgets: %s", exc.message)
            return
        if reached is not None:
            session_id, exceeded = reached
            ending.start(lambda: self._enforce_budget(name, session_id, exceeded),
                         what=f"session {session_id} over its {exceeded.budget} budget")


class _SessionEnding:
    """Ends a session (overdue, or over a budget) on a thread of its own: the end resets the
    VM and waits for this supervisor's helpers, which the main loop keeps running meanwhile."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._not_before = 0.0

    @property
    def busy(self) -> bool:
        return (self._thread is not None and self._thread.is_alive()) or time.monotonic() < self._not_before

    def start(self, end: Callable[[], None], *, what: str) -> None:
        if self.busy:
            return
        self._not_before = time.monotonic() + SESSION_RETRY_S  # Busy: another command; ask again soon
        self._thread = threading.Thread(target=self._run, args=(end, what), daemon=True, name="session-end")
        self._thread.start()

    @staticmethod
    def _run(end: Callable[[], None], what: str) -> None:
        try:
            end()
        except Busy:
            pass
        except AgentboxError as exc:
            log.error("ending %s failed: %s", what, exc.message)


def _proxy_helper(*, settings: Settings, paths: AppPaths, record: WorkspaceRecord,
                  files: WorkspaceFiles) -> SupervisedChild:
    egress = files.egress_dir
    pid_file = egress / "proxy.pid"

    def argv() -> list[str]:
        for leftover in ("proxy.sock", "control.sock", "proxy.pid"):
            (egress / leftover).unlink(missing_ok=True)
        pins = [arg for host, address in settings.egress_hosts for arg in ("--pin", f"{host}={address}")]
        return python_module_argv(
            PROXY_MODULE, "--proxy-socket", str(egress / "proxy.sock"), "--control-socket",
            str(egress / "control.sock"), "--policy-file", str(files.policy), "--log-file", str(files.net_log),
            "--pid-file", str(pid_file), "--audit-log", str(paths.audit_log(record.name)),
            "--session-file", str(files.session), "--usage-file", str(egress / EGRESS_USAGE_FILE), *pins)

    def ready(child: ChildProcess) -> bool:  # it writes its pid file once both sockets listen
        try:
            return pid_file.read_text().strip() == str(child.pid)
        except OSError:
            return False

    return SupervisedChild(name="proxy", argv=argv, log_path=egress / "proxy.log", ready=ready)


def _gateway_helper(*, settings: Settings, paths: AppPaths, record: WorkspaceRecord,
                    files: WorkspaceFiles) -> SupervisedChild:
    egress = files.egress_dir
    pid_file = egress / "gateway.pid"

    def argv() -> list[str]:
        for leftover in ("gateway.sock", "gateway.pid"):
            (egress / leftover).unlink(missing_ok=True)
        pins = [arg for host, address in settings.egress_hosts for arg in ("--pin", f"{host}={address}")]
        extra = ["--ca-bundle", str(settings.gateway_ca_bundle)] if settings.gateway_ca_bundle else []
        return python_module_argv(
            GATEWAY_MODULE, "--workspace", record.name, "--socket", str(egress / "gateway.sock"),
            "--token-file", str(files.gateway_token), "--usage-file", str(egress / USAGE_FILE),
            "--policy-file", str(files.policy), "--config-dir", str(paths.config_dir),
            "--audit-log", str(paths.audit_log(record.name)), "--pid-file", str(pid_file),
            "--upstream-port", str(settings.gateway_upstream_port), *pins, *extra)

    def ready(child: ChildProcess) -> bool:  # it writes its pid file once it listens
        try:
            return pid_file.read_text().strip() == str(child.pid)
        except OSError:
            return False

    return SupervisedChild(name="gateway", argv=argv, log_path=egress / "gateway.log", ready=ready)


def _forward_helper(*, record: WorkspaceRecord, files: WorkspaceFiles) -> SupervisedChild:
    egress = files.egress_dir
    state_file = egress / "forward.state"

    def argv() -> list[str]:
        state_file.unlink(missing_ok=True)
        target = ssh_target(record=record, files=files)
        return python_module_argv(
            FORWARD_MODULE, "--port", str(target.port), "--user", target.user, "--key", str(target.private_key),
            "--host-key", target.host_key, "--proxy-socket", str(egress / "proxy.sock"),
            "--gateway-socket", str(egress / "gateway.sock"),
            "--state-file", str(state_file), "--pid-file", str(egress / "forward.pid"),
            *(("--remote-uri", record.remote_uri) if record.remote_uri else ()))

    def ready(child: ChildProcess) -> bool:
        return child.poll() is None  # connected or not is its state file's business

    return SupervisedChild(name="forward", argv=argv, log_path=egress / "forward.log", ready=ready)
