"""One workspace's egress proxy as a process: policy from a JSON file (written back when it
changes, so a restart keeps it), decisions appended to the workspace's decision trail
(`net.jsonl`, hash-chained, see agentbox.audit.trail) and its audit log, a control socket,
and a clean exit on SIGTERM/SIGINT that removes its sockets and pid file.

The pid file is written once both sockets listen, so a supervisor can wait for it as the
sign that the proxy is ready."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from agentbox.audit import DECISION_EVENT, TRAIL_ROTATE_BYTES, AuditLog, decision_trail, set_aside_unchained
from agentbox.config.atomic_file import write_atomically
from agentbox.egress.approvals import ApprovalBroker
from agentbox.egress.control import EgressControlServer
from agentbox.egress.proxy import EgressProxy, ProxyLimits
from agentbox.egress.budget import EgressBudget
from agentbox.egress.records import ConnectionRecord, DecisionLog
from agentbox.egress.wire import policy_from_json, policy_to_json, record_to_json
from agentbox.errors import AgentboxError, EgressError, InvalidInput
from agentbox.model.network import IPAddress, NetworkPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DaemonOptions:
    proxy_socket: Path
    control_socket: Path
    policy_file: Path
    log_file: Path
    pid_file: Path | None = None
    tcp_port: int | None = None  # also listen on 127.0.0.1 (tests and benchmarks)
    approval_timeout: float = 30.0
    limits: ProxyLimits = field(default_factory=ProxyLimits)
    audit_log: Path | None = None  # the workspace's hash-chained audit log: every decision goes there too
    pinned_hosts: tuple[tuple[str, str], ...] = ()  # (name, address) the proxy never looks up
    log_rotate_bytes: int = TRAIL_ROTATE_BYTES  # the decision trail's segment size
    session_file: Path | None = None  # the session (id, egress budget); None: no budget
    usage_file: Path | None = None  # where the session's egress count is written


def load_policy_file(*, path: Path) -> NetworkPolicy:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise EgressError(f"policy file {path} does not exist",
                          hint='write {"mode": "off", "allowlist": []} there first') from None
    except (OSError, ValueError) as exc:
        raise EgressError(f"cannot read policy file {path}: {exc}") from None
    try:
        return policy_from_json(data)
    except InvalidInput as exc:
        raise InvalidInput(f"{path}: {exc.message}", hint=exc.hint) from None


def save_policy_file(*, path: Path, policy: NetworkPolicy) -> None:
    """Replace the file atomically (a crash leaves the old or the new policy, never half)."""
    write_atomically(path=path, data=(json.dumps(policy_to_json(policy), indent=2) + "\n").encode())


async def serve(*, options: DaemonOptions, stop: asyncio.Event) -> None:
    """Run until `stop` is set, then shut everything down."""
    policy = load_policy_file(path=options.policy_file)
    set_aside_unchained(options.log_file)  # a trail from before the chain: its lines are kept apart
    os.close(os.open(options.log_file, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))  # owner-only from the start
    sink = _TrailSink(trail=decision_trail(path=options.log_file, rotate_bytes=options.log_rotate_bytes),
                      audit=AuditLog(path=options.audit_log) if options.audit_log else None)
    pinned = _pinned(options.pinned_hosts)
    proxy = EgressProxy(policy=policy, limits=options.limits, pinned_hosts=pinned,
                        decisions=DecisionLog(sink=sink),
                        approvals=ApprovalBroker(timeout=options.approval_timeout),
                        budget=EgressBudget(session_file=options.session_file, usage_file=options.usage_file))
    proxy.add_policy_listener(listener=lambda new: save_policy_file(path=options.policy_file, policy=new))
    control = EgressControlServer(proxy=proxy)
    try:
        await proxy.start(unix_path=options.proxy_socket, tcp_port=options.tcp_port)
        await control.start(path=options.control_socket)
        if options.pid_file is not None:
            options.pid_file.write_text(f"{os.getpid()}\n")
        log.info("egress proxy %d serving %s (mode %s)", os.getpid(), options.proxy_socket, policy.mode)
        await stop.wait()
    finally:
        await control.close()
        await proxy.close()
        sink.close()
        if options.pid_file is not None:
            with contextlib.suppress(OSError):
                if options.pid_file.read_text().strip() == str(os.getpid()):
                    options.pid_file.unlink()


def run_daemon(*, options: DaemonOptions) -> None:
    """Serve in this process until SIGTERM or SIGINT."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(options=options, stop=stop)

    asyncio.run(main())


class _TrailSink:
    """Appends each decision to the decision trail, then to the audit log, on one worker
    thread: an append takes a file lock (and the audit log's an fsync), which must not stall
    the event loop, and one thread keeps the order."""

    def __init__(self, *, trail: AuditLog, audit: AuditLog | None) -> None:
        self._logs = (trail,) if audit is None else (trail, audit)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trail")

    def __call__(self, record: ConnectionRecord) -> None:
        self._worker.submit(self._append, record_to_json(record))

    def _append(self, details: dict[str, object]) -> None:
        for target in self._logs:
            try:
                target.append(event=DECISION_EVENT, details=details)
            except AgentboxError as exc:  # the other log still has it
                log.error("cannot append a decision: %s", exc.message)

    def close(self) -> None:
        self._worker.shutdown(wait=True)


def _pinned(pairs: tuple[tuple[str, str], ...]) -> dict[str, IPAddress]:
    try:
        return {name: ipaddress.ip_address(address) for name, address in pairs}
    except ValueError as exc:
        raise InvalidInput(f"pinned host: {exc}", hint="use NAME=IP, e.g. web.test=127.0.0.1") from None
