"""The TUI on the Fake backend: real files, real image store, a scripted guest, a clock that
only moves when a test says so, and a home folder of its own (what the folder trees show).

Adapted from tests/services/conftest.py (not shared: that one belongs to the services tests),
plus what the TUI needs: `Services` wired over those fakes, a terminal that records instead of
running ssh, a stand-in proxy whose held connections a test scripts, and helpers that drive
the app with Pilot until its workers are done.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.worker import WorkerState

from agentbox.backends.base import DomainState
from agentbox.backends.fake import FakeBackend
from agentbox.bootstrap import Services, build_services
from agentbox.config.paths import AppPaths
from agentbox.config.settings import Settings
from agentbox.config.templates import TemplateCatalogue, builtin_templates_dir, fragments_dir
from agentbox.egress.approvals import ApprovalRequest, ApprovalVerdict
from agentbox.egress.client import PolicyChange
from agentbox.egress.daemon import save_policy_file
from agentbox.egress.policy import Decision
from agentbox.egress.records import ConnectionRecord, Outcome
from agentbox.audit import DECISION_EVENT, decision_trail
from agentbox.egress.wire import record_to_json
from agentbox.errors import BackendUnavailable, EgressError, GuestError
from agentbox.images.store import ImageStore
from agentbox.model.network import NetworkPolicy
from agentbox.model.progress import CancelToken, ProgressCallback, ignore_progress
from agentbox.provision.refresh import is_refresh
from agentbox.remote.ssh import SshTarget
from tests.services.conftest import answer_ro_proofs
from agentbox.services.context import ServiceContext
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.services.egress_runner import EgressHealth
from agentbox.stores.api_keys import ApiKeyStore
from agentbox.stores.records import WorkspaceFiles, WorkspaceRecord
from agentbox.host import bind_mounts
from agentbox.tui.app import AgentboxApp
from agentbox.tui.audit_screen import FOLLOW_GROUP
from agentbox.tui.terminal import TuiOptions

FIXED_NOW = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)
# Workers that run as long as their screen or workspace: settle() does not wait for them
# (`_loader` is the DirectoryTree's own loading queue).
LONG_LIVED = (FOLLOW_GROUP, "_loader")
# Tests reload explicitly (actions reload when they finish): no interval refresh in between.
TEST_OPTIONS = TuiOptions(refresh_s=3600, follow_poll_s=0.02)


@dataclass
class ScriptedGuest:
    """Stands in for the guest's SSH server. `hold` keeps it from answering until released
    (or the operation is cancelled), to catch an operation half-way."""

    answers: bool = True
    hold: threading.Event | None = None
    waiting: threading.Event = field(default_factory=threading.Event)
    commands: list[list[str]] = field(default_factory=list)

    def wait_until_ready(self, *, target: SshTarget, timeout_s: float, cancel: CancelToken,
                         on_progress: ProgressCallback, check_alive: Callable[[], None] | None = None) -> None:
        self.waiting.set()
        while self.hold is not None and not self.hold.is_set():
            cancel.wait(0.01)
        if check_alive:
            check_alive()
        if not self.answers:
            raise GuestError(f"the guest did not answer SSH within {timeout_s:.0f} s")

    def run_command(self, *, target: SshTarget, argv: Sequence[str], stdout: Callable[[bytes], None],
                    stderr: Callable[[bytes], None], stdin: bytes | Callable[[], bytes] | None = None,
                    timeout_s: float | None = None, cancel: CancelToken | None = None) -> int:
        self.commands.append(list(argv))
        if argv[:2] == ["cloud-init", "status"]:
            stdout(b"status: done\n")
            return 0
        if is_refresh(argv) or list(argv[:3]) == ["sudo", "-n", "sh"]:
            answer_ro_proofs(argv, stderr, writable=set())
        if is_refresh(argv):
            stdout(f"{time.time():.6f}\n".encode())
            return 0
        stdout(b"ran\n")
        return 0


class FlakyBackend(FakeBackend):
    """A backend whose hypervisor is unreachable until `reachable` is set."""

    reachable = True

    def list_domains(self):  # type: ignore[no-untyped-def]
        if not self.reachable:
            raise BackendUnavailable("cannot connect to test:///nowhere: no libvirt daemon",
                                     hint="start libvirtd (sudo libvirtd -d), then retry")
        return super().list_domains()


@dataclass
class Clock:
    """The services' clock: fixed, unless a test moves it on."""

    now: datetime = FIXED_NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class ScriptedApprovalStream:
    """One approver's connection to the stand-in proxy: hands out what `StandInEgress.hold`
    queued for its workspace, and records the answers."""

    def __init__(self, *, egress: StandInEgress, name: str) -> None:
        self._egress, self._name = egress, name
        self.closed = False

    def next_request(self, *, timeout: float | None = None) -> ApprovalRequest | None:
        try:
            return self._egress.queue(self._name).get(timeout=timeout)
        except queue.Empty:
            return None

    def answer(self, *, request_id: str, verdict: ApprovalVerdict) -> bool:
        self._egress.answers.append((self._name, request_id, verdict))
        return request_id not in self._egress.decided  # already decided: too late

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> ScriptedApprovalStream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass
class StandInEgress:
    """Stands in for the egress proxy and forward processes (none run in these tests)."""

    running: set[str] = field(default_factory=set)
    held: dict[str, queue.Queue[ApprovalRequest]] = field(default_factory=dict)
    answers: list[tuple[str, str, ApprovalVerdict]] = field(default_factory=list)
    decided: set[str] = field(default_factory=set)  # request ids the proxy settled by itself
    streams: list[ScriptedApprovalStream] = field(default_factory=list)
    applied: list[tuple[str, NetworkPolicy]] = field(default_factory=list)  # every policy the proxy got

    def queue(self, name: str) -> queue.Queue[ApprovalRequest]:
        return self.held.setdefault(name, queue.Queue())

    def hold(self, name: str, *, host: str, port: int = 443, request_id: str = "1", address: str = "",
             asked: datetime = FIXED_NOW) -> ApprovalRequest:
        """The proxy holds a connection of `name`'s guest and asks its approvers."""
        request = ApprovalRequest(id=request_id, time=asked.isoformat(timespec="milliseconds"), host=host,
                                  address=address, port=port, method="CONNECT")
        self.queue(name).put(request)
        return request

    def approvals(self, *, files: WorkspaceFiles) -> ScriptedApprovalStream:
        name = files.directory.name
        if name not in self.running:
            raise EgressError(f"the egress proxy is not running (no control socket at {files.egress_dir})")
        stream = ScriptedApprovalStream(egress=self, name=name)
        self.streams.append(stream)
        return stream

    def start(self, *, record: WorkspaceRecord, files: WorkspaceFiles, forward_down: bool) -> None:
        pass  # ensure_running, which follows, is where the stand-in comes up

    def ensure_running(self, *, record: WorkspaceRecord, files: WorkspaceFiles) -> None:
        self.running.add(record.name)

    def stop(self, *, files: WorkspaceFiles, forward_only: bool = False) -> None:
        if not forward_only:
            self.running.discard(files.directory.name)

    def hold_through_power_cycle(self, *, files: WorkspaceFiles, forward_down: bool = False) -> None:
        pass  # the reset's power cycle: nothing runs here to hold down

    def health(self, *, files: WorkspaceFiles) -> EgressHealth:
        up = files.directory.name in self.running
        return EgressHealth(proxy_running=up, forward_connected=up, supervised=up)

    def set_policy(self, *, files: WorkspaceFiles, policy: NetworkPolicy) -> PolicyChange:
        self.applied.append((files.directory.name, policy))
        save_policy_file(path=files.policy, policy=policy)  # as the real proxy does
        return PolicyChange(policy=policy, cut=0)


@dataclass
@dataclass
class RecordingTerminal:
    """Records what the app would have run in the real terminal."""

    ran: list[list[str]] = field(default_factory=list)
    recorded: int = 0  # of those, how many were to run as a recorded session
    exit_code: int = 0
    call_run: bool = False  # really run a recorded session (the system ssh) instead of only noting it

    def hand_over(self, *, app: Any, argv: Sequence[str], run: Any = None) -> int:
        self.ran.append(list(argv))
        self.recorded += run is not None
        if self.call_run and run is not None:
            return int(run())
        return self.exit_code


@dataclass
class TuiWorld:
    services: Services
    ctx: ServiceContext  # what the services are built on, for tests that look behind them
    backend: FlakyBackend
    guest: ScriptedGuest
    terminal: RecordingTerminal
    egress: StandInEgress
    clock: Clock
    home: Path

    def app(self, *, terminal: Any = None) -> AgentboxApp:
        return AgentboxApp(services=self.services, options=TEST_OPTIONS,
                           terminal=self.terminal if terminal is None else terminal)

    def run(self, scenario: Callable[[Pilot[Any]], Awaitable[None]], *, app: AgentboxApp | None = None,
            size: tuple[int, int] = (120, 40)) -> None:
        """Drive the app (this world's, unless given) through `scenario`."""
        def release() -> None:
            if self.guest.hold is not None:
                self.guest.hold.set()
        drive(app or self.app(), scenario, size=size, finally_=release)

    def make(self, name: str, *, running: bool = True) -> None:
        create_workspace(ctx=self.ctx, request=CreateRequest(name=name), on_progress=ignore_progress,
                         cancel=CancelToken())
        if not running:
            self.backend.set_state(self.domain(name), DomainState.STOPPED)

    def domain(self, name: str) -> str:
        return self.ctx.domain_name(name=name)

    def state(self, name: str) -> DomainState | None:
        info = self.backend.get(name=self.domain(name))
        return None if info is None else info.state

    def events(self, name: str) -> list[str]:
        return [record["event"] for record in self.audit(name)]

    def audit(self, name: str) -> list[dict[str, Any]]:
        path = self.ctx.paths.audit_log(name)
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def log_connection(self, name: str, *, host: str, port: int = 443, allowed: bool, rule: str,
                       outcome: str = "completed", minute: int = 31) -> None:
        """A decision record, as the proxy appends it to the workspace's network log."""
        record = ConnectionRecord(
            time=FIXED_NOW.replace(minute=minute).isoformat(timespec="milliseconds"), host=host,
            address="" if not allowed else "151.101.0.50", port=port, method="CONNECT",
            decision=Decision(allowed, rule, "test"), outcome=Outcome(outcome if allowed else "denied"),
            bytes_up=10, bytes_down=20, duration_s=0.5)
        decision_trail(path=self.ctx.records.files(name=name).net_log, clock=lambda: FIXED_NOW).append(
            event=DECISION_EVENT, details=record_to_json(record))


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Times are shown in local time: make that UTC, so screens look the same everywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(scope="session")
def base_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    disk = tmp_path_factory.mktemp("base") / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1G"], check=True)
    return disk, hashlib.sha256(disk.read_bytes()).hexdigest()


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home folder of the test's own: what the folder trees start from."""
    folder = tmp_path / "home"
    for sub in ("projects/alpha", "projects/beta", "notes", ".ssh"):
        (folder / sub).mkdir(parents=True)
    (folder / "projects" / "alpha" / "readme.md").write_text("hello from alpha\n")
    monkeypatch.setenv("HOME", str(folder))
    return folder


@pytest.fixture()
def world(tmp_path: Path, base_image: tuple[Path, str], home: Path) -> Iterator[TuiWorld]:
    disk, digest = base_image
    paths = AppPaths.under(root=tmp_path / "root")
    paths.user_templates_dir.mkdir(parents=True)
    (paths.user_templates_dir / "tiny.yaml").write_text(
        f"name: tiny\ndescription: a tiny test image\nimage:\n  url: file://{disk}\n  sha256: {digest}\n"
        "cloud_init:\n  fragments: [base.yaml]\n")
    settings = Settings(libvirt_uri="fake:///", storage_dir=tmp_path / "storage", image_dir=tmp_path / "images",
                        default_template="tiny", boot_timeout_s=30)
    backend = FlakyBackend(owner="test-owner")
    guest = ScriptedGuest()
    egress = StandInEgress()
    clock = Clock()
    ctx = ServiceContext(paths=paths, settings=settings, backend=backend,
                         catalogue=TemplateCatalogue(builtin_dir=builtin_templates_dir(),
                                                     user_dir=paths.user_templates_dir),
                         images=ImageStore(image_dir=settings.image_dir), guest=guest,
                         fragments_dir=fragments_dir(), owner="test-owner", egress=egress, clock=clock)
    # The real wiring over the fake collaborators.
    services = build_services(ctx=ctx)
    # API keys in a 0600 file under the test's own config dir, never the desktop keyring.
    services = replace(services, keys=ApiKeyStore(config_dir=paths.config_dir, use_keyring=False))
    yield TuiWorld(services=services, ctx=ctx, backend=backend, guest=guest, terminal=RecordingTerminal(),
                   egress=egress,
                   clock=clock, home=home)
    # A share made on this host may be a real read-only bind mount: never leave one behind.
    for mountpoint in bind_mounts.leftover_mounts(under=settings.storage_dir, keep=()):
        bind_mounts.unmount(mountpoint)


# -- driving the app ----------------------------------------------------------------------------


async def settle(pilot: Pilot[Any]) -> None:
    """Wait until every worker but a live follower has finished and its messages are handled."""
    app = pilot.app
    for _ in range(100):
        await pilot.pause()
        busy = [w for w in app.workers if w.group not in LONG_LIVED
                and w.state in (WorkerState.PENDING, WorkerState.RUNNING)]
        if not busy:
            await pilot.pause()
            return
        await app.workers.wait_for_complete(busy)
    raise AssertionError(f"workers still busy: {[w.name for w in app.workers]}")


async def until(pilot: Pilot[Any], condition: Callable[[], bool], *, what: str) -> None:
    """Let the app run until `condition` holds (for work paced by a thread, e.g. following a log)."""
    for _ in range(500):
        if condition():
            return
        await pilot.pause(0.01)
    raise AssertionError(f"never happened: {what}")


def drive(app: AgentboxApp, scenario: Callable[[Pilot[Any]], Awaitable[None]], *,
          size: tuple[int, int] = (120, 40), finally_: Callable[[], None] = lambda: None) -> None:
    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            try:
                await settle(pilot)
                await scenario(pilot)
            finally:
                finally_()  # e.g. let a held worker thread go, or the app could not exit
    asyncio.run(main())


def os_env_without_tmux() -> dict[str, str]:
    """The environment for a child tmux server: no inherited TMUX, so it never attaches to ours."""
    return {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}


def screen_text(pilot: Pilot[Any]) -> str:
    """The active screen as plain text, as a person would read it."""
    return "\n".join(strip.text for strip in pilot.app.screen._compositor.render_strips())
