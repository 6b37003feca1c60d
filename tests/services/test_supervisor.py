"""The supervisor for real, on the Fake backend: its egress proxy is a real child process
(the forward finds no guest SSH here and keeps retrying with backoff), restarted when it
dies; the supervisor ends with the domain and takes its children along; an overdue
session is handed to the session service once, and a host key mismatch stops the forward."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from agentbox.audit import read_records
from agentbox.backends.base import DomainState
from agentbox.host.process_identity import is_alive
from agentbox.host.supervision_files import SupervisorFiles, SupervisorState
from agentbox.model.progress import CancelToken
from agentbox.provision.keys import generate_ed25519
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.services.egress_runner import SupervisedEgress
from agentbox.services.supervisor import SupervisorExit, WorkspaceSupervisor

from tests.sshd import running_sshd

from .conftest import World

DOMAIN = "agentbox-ws"


def until(check: Callable[[], bool], *, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.05)


class Running:
    def __init__(self, world: World, *, session: tuple[str, str] | None = None) -> None:
        self.ended: list[tuple[str, str]] = []
        self.session = session
        self.stop = threading.Event()
        self.exit: SupervisorExit | None = None
        self.files = SupervisorFiles(egress_dir=world.ctx.records.files(name="ws").egress_dir)
        supervisor = WorkspaceSupervisor(ctx=world.ctx, end_session=lambda n, s: self.ended.append((n, s)),
                                         read_session=lambda _: self.session)
        self.thread = threading.Thread(target=self._run, args=(supervisor,), daemon=True)
        self.thread.start()

    def _run(self, supervisor: WorkspaceSupervisor) -> None:
        self.exit = supervisor.run(name="ws", stop=self.stop)

    def state(self) -> SupervisorState | None:
        return self.files.read_state()


@pytest.fixture()
def running(world: World) -> Iterator[tuple[World, Running]]:
    create_workspace(ctx=world.ctx, request=CreateRequest(name="ws"), on_progress=world.progress.append,
                     cancel=CancelToken())
    sup = Running(world)
    until(lambda: (s := sup.state()) is not None and s.proxy is not None, what="the proxy listens")
    yield world, sup
    sup.stop.set()
    sup.thread.join(timeout=20)


def test_a_killed_proxy_is_restarted_by_the_supervisor(running: tuple[World, Running]) -> None:
    world, sup = running
    first = sup.state().proxy  # type: ignore[union-attr]
    assert first is not None and is_alive(first)
    os.kill(first.pid, signal.SIGKILL)
    until(lambda: (s := sup.state()) is not None and s.proxy not in (None, first), what="a new proxy")
    assert is_alive(sup.state().proxy)  # type: ignore[union-attr]
    assert (world.ctx.records.files(name="ws").egress_dir / "proxy.sock").exists()


def test_the_gateway_is_a_child_too_restarted_when_killed_and_gone_with_the_supervisor(
        running: tuple[World, Running]) -> None:
    world, sup = running
    until(lambda: (s := sup.state()) is not None and s.gateway is not None, what="the gateway listens")
    first = sup.state().gateway  # type: ignore[union-attr]
    assert first is not None and is_alive(first)
    sock = world.ctx.records.files(name="ws").egress_dir / "gateway.sock"
    assert sock.stat().st_mode & 0o777 == 0o600
    os.kill(first.pid, signal.SIGKILL)
    until(lambda: (s := sup.state()) is not None and s.gateway not in (None, first), what="a new gateway")
    state = sup.state()
    assert state is not None and is_alive(state.gateway)
    world.backend.set_state(DOMAIN, DomainState.STOPPED)
    sup.thread.join(timeout=15)
    assert not is_alive(state.gateway) and not sock.exists()


def test_a_second_supervisor_leaves_at_once(running: tuple[World, Running]) -> None:
    world, _ = running
    other = WorkspaceSupervisor(ctx=world.ctx, end_session=lambda *_: None, read_session=lambda _: None)
    assert other.run(name="ws", stop=threading.Event()) == SupervisorExit(ran=False, reason="another supervisor runs")


def test_the_supervisor_ends_with_the_domain_and_takes_its_helpers_along(running: tuple[World, Running]) -> None:
    world, sup = running
    state = sup.state()
    assert state is not None
    world.backend.set_state(DOMAIN, DomainState.STOPPED)  # stopped from outside agentbox
    sup.thread.join(timeout=15)
    assert sup.exit == SupervisorExit(ran=True, reason="the VM stopped")
    assert not is_alive(state.proxy) and not is_alive(state.forward)
    assert sup.files.supervisor() is None and sup.state() is None


def test_a_reset_hold_keeps_the_supervisor_and_its_forward_through_a_power_cycle(
        running: tuple[World, Running]) -> None:
    world, sup = running
    until(lambda: (s := sup.state()) is not None and s.forward is not None, what="the forward runs")
    forward = sup.state().forward  # type: ignore[union-attr]
    sup.files.place_hold(reason="a reset", forward_down=False)
    until(lambda: (s := sup.state()) is not None and s.held == "a reset", what="the hold is seen")
    world.backend.set_state(DOMAIN, DomainState.STOPPED)
    time.sleep(3)  # longer than the supervisor needs to notice a stopped VM
    assert sup.thread.is_alive() and sup.state().forward == forward  # type: ignore[union-attr]
    world.backend.set_state(DOMAIN, DomainState.RUNNING)
    sup.files.release_hold()
    until(lambda: (s := sup.state()) is not None and not s.held, what="the hold is gone")


def test_a_snapshot_hold_takes_the_forward_down_until_it_is_released(running: tuple[World, Running]) -> None:
    _, sup = running
    until(lambda: (s := sup.state()) is not None and s.forward is not None, what="the forward runs")
    sup.files.place_hold(reason="a snapshot", forward_down=True)
    until(lambda: (s := sup.state()) is not None and s.held == "a snapshot" and s.forward is None,
          what="the forward is held down")
    sup.files.release_hold()
    until(lambda: (s := sup.state()) is not None and not s.held and s.forward is not None,
          what="the forward is back")


def test_an_overdue_session_is_handed_over_once(world: World) -> None:
    create_workspace(ctx=world.ctx, request=CreateRequest(name="ws"), on_progress=world.progress.append,
                     cancel=CancelToken())
    past = (world.ctx.clock() - timedelta(seconds=5)).isoformat(timespec="seconds")
    sup = Running(world, session=("abc123", past))
    try:
        until(lambda: sup.ended == [("ws", "abc123")], what="the session is ended")
        time.sleep(3)  # the stand-in left the session in place: asked again, but not at every check
        assert set(sup.ended) == {("ws", "abc123")} and len(sup.ended) <= 2
    finally:
        sup.stop.set()
        sup.thread.join(timeout=20)


def test_a_host_key_mismatch_is_audited_once_and_the_forward_stays_down(world: World, tmp_path: Path) -> None:
    """Something else answers on the workspace's SSH port with another host key: the forward
    must not keep knocking on it, and the trail must say so."""
    create_workspace(ctx=world.ctx, request=CreateRequest(name="ws"), on_progress=world.progress.append,
                     cancel=CancelToken())
    record = world.ctx.records.load(name="ws")
    assert record is not None
    impostor = generate_ed25519(comment="not-the-pinned-key")
    (tmp_path / "impostor").mkdir()
    with running_sshd(root=tmp_path / "impostor", port=record.ssh_port, host_key=impostor,
                      authorized_key=generate_ed25519(comment="nobody").public_openssh):
        sup = Running(world)
        try:
            until(lambda: (s := sup.state()) is not None and "host key" in s.problem, what="the mismatch is seen")
            time.sleep(2)  # no restarts of the forward meanwhile
            assert sup.state().forward is None  # type: ignore[union-attr]
            events = [r.event for r in read_records(path=world.ctx.paths.audit_log("ws"))]
            assert events.count("egress.host_key_mismatch") == 1
            assert not SupervisedEgress(paths=world.ctx.paths).health(
                files=world.ctx.records.files(name="ws")).forward_connected
        finally:
            sup.stop.set()
            sup.thread.join(timeout=20)
