"""Per-session host budgets on the Fake backend: what a session is measured from, how its
use is read, and how reaching a budget ends it (or pauses the guest)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

import pytest

from agentbox.audit import read_records
from agentbox.backends.base import DomainState
from agentbox.backends.fake import DEFAULT_CAPABILITIES, FakeBackend
from agentbox.errors import Busy, InvalidInput
from agentbox.host.locks import workspace_lock
from agentbox.model.budget import OnExceeded
from agentbox.model.progress import CancelToken
from agentbox.services.budgets import BudgetService
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.services.sessions import SessionService
from agentbox.services.snapshots import SnapshotService
from agentbox.services.supervisor import WorkspaceSupervisor
from agentbox.services.workspaces import WorkspaceService
from agentbox.stores.receipts import ReceiptStore

from .conftest import World

DOMAIN = "agentbox-ws"


def services(world: World) -> tuple[SessionService, BudgetService]:
    sessions = SessionService(ctx=world.ctx, workspaces=WorkspaceService(ctx=world.ctx),
                              snapshots=SnapshotService(ctx=world.ctx))
    return sessions, BudgetService(ctx=world.ctx, sessions=sessions)


def start(world: World) -> tuple[SessionService, BudgetService, str]:
    create_workspace(ctx=world.ctx, request=CreateRequest(name="ws"), on_progress=world.progress.append,
                     cancel=CancelToken())
    sessions, budgets = services(world)
    world.backend.add_usage(DOMAIN, cpu_seconds=500.0, disk_write_bytes=10**9)  # before the session: not its own
    budgets.set(name="ws", egress_bytes=1_000_000, disk_write_bytes=50_000_000, cpu_seconds=60)
    session = sessions.start(name="ws", max_minutes=None, on_progress=world.progress.append, cancel=CancelToken())
    return sessions, budgets, session.id


def audit(world: World, event: str) -> list[dict[str, object]]:
    return [r.details for r in read_records(path=world.ctx.paths.audit_log("ws")) if r.event == event]


def test_a_session_is_measured_from_its_start(world: World) -> None:
    sessions, budgets, session_id = start(world)
    assert budgets.check("ws") is None
    world.backend.add_usage(DOMAIN, cpu_seconds=30.0, disk_write_bytes=20_000_000)
    status = budgets.status(name="ws")
    assert status.session == session_id
    assert {line.budget: (line.used, line.limit, line.exceeded) for line in status.lines} == {
        "egress_bytes": (0.0, 1_000_000, False), "disk_write_bytes": (20_000_000.0, 50_000_000, False),
        "cpu_seconds": (30.0, 60, False)}
    world.backend.add_usage(DOMAIN, disk_write_bytes=30_000_000)
    reached = budgets.check("ws")
    assert reached is not None and reached[0] == session_id
    assert (reached[1].budget, reached[1].used, reached[1].limit) == ("disk_write_bytes", 50_000_000, 50_000_000)


def test_reaching_a_budget_ends_the_session_with_a_receipt_and_a_reset(world: World) -> None:
    sessions, budgets, session_id = start(world)
    world.backend.add_usage(DOMAIN, cpu_seconds=61.5)
    reached = budgets.check("ws")
    assert reached is not None
    budgets.enforce("ws", *reached)
    assert sessions.current(name="ws") is None
    [exceeded] = audit(world, "budget.exceeded")
    assert exceeded == {"session": session_id, "budget": "cpu_seconds", "used": 61.5, "limit": 60, "action": "end"}
    [ended] = [d for d in audit(world, "session.ended") if d["session"] == session_id]
    assert "budget cpu_seconds exceeded" in str(ended["reason"]) and ended["reset"] is not None
    receipt = ReceiptStore(paths=world.ctx.paths).get(name="ws", receipt_id=session_id).receipt
    assert "cpu_seconds" in receipt.reason
    assert {line.budget: line.exceeded for line in receipt.budgets} == {
        "egress_bytes": False, "disk_write_bytes": False, "cpu_seconds": True}
    budgets.enforce("ws", *reached)  # a second call for the ended session does nothing
    assert len(audit(world, "budget.exceeded")) == 1


def test_the_proxys_egress_count_is_the_sessions_only_while_it_names_the_session(world: World) -> None:
    _sessions, budgets, session_id = start(world)
    usage = world.ctx.records.files(name="ws").egress_dir / "egress-usage.json"
    usage.parent.mkdir(exist_ok=True)
    usage.write_text(json.dumps({"session": "an-older-one", "bytes": 5_000_000, "limit": 1, "exceeded": True}))
    assert budgets.check("ws") is None
    usage.write_text(json.dumps({"session": session_id, "bytes": 1_000_123, "limit": 1_000_000, "exceeded": True}))
    reached = budgets.check("ws")
    assert reached is not None and (reached[1].budget, reached[1].used) == ("egress_bytes", 1_000_123)


def test_pause_freezes_the_guest_and_keeps_the_session(world: World) -> None:
    sessions, budgets, session_id = paused_by_cpu(world)
    assert world.backend.get(name=DOMAIN).state is DomainState.PAUSED
    current = sessions.current(name="ws")
    assert current is not None and current.id == session_id and current.tripped == "cpu_seconds"
    assert budgets.check("ws") is None  # acted on once
    assert [d["action"] for d in audit(world, "budget.exceeded")] == ["pause"]


def test_a_budget_changed_during_a_session_applies_to_it(world: World) -> None:
    sessions, budgets, _ = start(world)
    world.backend.add_usage(DOMAIN, cpu_seconds=30.0)
    assert budgets.check("ws") is None
    budgets.set(name="ws", cpu_seconds=20)
    current = sessions.current(name="ws")
    assert current is not None and current.cpu_seconds == 20 and current.egress_bytes == 1_000_000
    assert budgets.check("ws") is not None
    assert world.ctx.records.load(name="ws").host_budget.cpu_seconds == 20  # and the next sessions


def test_a_backend_that_cannot_measure_refuses_those_budgets(world: World) -> None:
    blind = FakeBackend(capabilities=replace(DEFAULT_CAPABILITIES, usage_stats=False), owner=world.ctx.owner)
    ctx = replace(world.ctx, backend=blind)
    create_workspace(ctx=ctx, request=CreateRequest(name="ws"), on_progress=world.progress.append,
                     cancel=CancelToken())
    sessions = SessionService(ctx=ctx, workspaces=WorkspaceService(ctx=ctx), snapshots=SnapshotService(ctx=ctx))
    budgets = BudgetService(ctx=ctx, sessions=sessions)
    with pytest.raises(InvalidInput, match="cannot measure disk writes or CPU time") as info:
        budgets.set(name="ws", cpu_seconds=60)
    assert info.value.hint and "--egress" in info.value.hint
    assert budgets.set(name="ws", egress_bytes=5000).egress_bytes == 5000
    assert "cannot read disk writes" in budgets.status(name="ws").unmeasured


def test_the_supervisor_hands_a_reached_budget_over_once_it_is_reached(world: World) -> None:
    create_workspace(ctx=world.ctx, request=CreateRequest(name="ws"), on_progress=world.progress.append,
                     cancel=CancelToken())
    sessions, budgets = services(world)
    budgets.set(name="ws", cpu_seconds=10)
    session = sessions.start(name="ws", max_minutes=None, on_progress=world.progress.append, cancel=CancelToken())
    supervisor = WorkspaceSupervisor(ctx=world.ctx, end_session=lambda *_: None, read_session=lambda _: None,
                                     check_budget=budgets.check, enforce_budget=budgets.enforce)
    stop = threading.Event()
    thread = threading.Thread(target=lambda: supervisor.run(name="ws", stop=stop), daemon=True)
    thread.start()
    try:
        time.sleep(2)
        assert sessions.current(name="ws") is not None  # under budget: left alone
        world.backend.add_usage(DOMAIN, cpu_seconds=11.0)
        deadline = time.monotonic() + 30
        while sessions.current(name="ws") is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sessions.current(name="ws") is None
        assert [d["session"] for d in audit(world, "budget.exceeded")] == [session.id]
    finally:
        stop.set()
        thread.join(timeout=20)


def test_an_end_that_finds_the_workspace_busy_is_retried_and_audited_once(world: World) -> None:
    sessions, budgets, session_id = start(world)
    world.backend.add_usage(DOMAIN, cpu_seconds=100.0)
    reached = budgets.check("ws")
    assert reached is not None
    done = threading.Event()

    def hold() -> None:
        with workspace_lock(paths=world.ctx.paths, name="ws"):
            done.wait(10)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    time.sleep(0.2)
    with pytest.raises(Busy):
        budgets.enforce("ws", *reached)
    done.set()
    holder.join()
    budgets.enforce("ws", *reached)
    assert sessions.current(name="ws") is None
    assert [d["session"] for d in audit(world, "budget.exceeded")] == [session_id]


def paused_by_cpu(world: World) -> tuple[SessionService, BudgetService, str]:
    """A session whose CPU budget (60 s) paused the guest at 100 s used."""
    sessions, budgets, session_id = start(world)
    budgets.set(name="ws", on_exceeded=OnExceeded.PAUSE)
    world.backend.add_usage(DOMAIN, cpu_seconds=100.0)
    reached = budgets.check("ws")
    assert reached is not None
    budgets.enforce("ws", *reached)
    return sessions, budgets, session_id


def test_resume_is_refused_while_the_budget_that_paused_it_is_still_exceeded(world: World) -> None:
    sessions, budgets, session_id = paused_by_cpu(world)
    with pytest.raises(InvalidInput) as info:
        budgets.resume(name="ws")
    message = info.value.message
    assert "the cpu_seconds budget that paused 'ws' is still exceeded" in message
    assert "100.0 s of 60.0 s" in message
    assert info.value.hint and "agentbox budget ws --cpu 4m --resume" in info.value.hint
    assert world.backend.get(name=DOMAIN).state is DomainState.PAUSED
    assert sessions.current(name="ws").tripped == "cpu_seconds"
    assert audit(world, "budget.resumed") == []


def test_a_raised_budget_lets_resume_run_the_guest_and_the_session_goes_on(world: World) -> None:
    sessions, budgets, session_id = paused_by_cpu(world)
    budgets.set(name="ws", cpu_seconds=7200)
    assert world.backend.get(name=DOMAIN).state is DomainState.PAUSED  # raising alone does not resume
    assert budgets.status(name="ws").paused_by == "cpu_seconds"
    resumed = budgets.resume(name="ws")
    assert (resumed.session, resumed.paused_by) == (session_id, "cpu_seconds")
    assert world.backend.get(name=DOMAIN).state is DomainState.RUNNING
    current = sessions.current(name="ws")
    assert current is not None and current.id == session_id and current.tripped == ""
    assert audit(world, "budget.resumed") == [{"session": session_id, "budget": "cpu_seconds"}]
    # The raised budget is enforced again in the same session, and audited again.
    world.backend.add_usage(DOMAIN, cpu_seconds=7200.0)
    reached = budgets.check("ws")
    assert reached is not None and reached[1].limit == 7200
    budgets.enforce("ws", *reached)
    assert world.backend.get(name=DOMAIN).state is DomainState.PAUSED
    assert [d["limit"] for d in audit(world, "budget.exceeded")] == [60, 7200]


def test_resume_names_another_budget_still_exceeded(world: World) -> None:
    _sessions, budgets, _ = paused_by_cpu(world)
    world.backend.add_usage(DOMAIN, disk_write_bytes=60_000_000)  # past its 50 MB while paused (a flush)
    budgets.set(name="ws", cpu_seconds=7200)
    with pytest.raises(InvalidInput, match=r"disk_write_bytes budget of 'ws' \(its cpu_seconds budget paused it\) "
                                           r"is still exceeded") as info:
        budgets.resume(name="ws")
    assert info.value.hint and "--disk-writes 120M --resume" in info.value.hint


def test_resume_refuses_a_workspace_no_budget_paused(world: World) -> None:
    _sessions, budgets, _ = start(world)
    with pytest.raises(InvalidInput, match="'ws' is not paused by a budget"):
        budgets.resume(name="ws")
    assert world.backend.get(name=DOMAIN).state is DomainState.RUNNING


def test_list_and_start_say_it_was_paused_by_its_budget(world: World) -> None:
    paused_by_cpu(world)
    workspaces = WorkspaceService(ctx=world.ctx)
    starts = world.backend.calls.count(("start", DOMAIN))
    [listed] = workspaces.list()
    assert (listed.state.value, listed.paused_by) == ("paused", "cpu_seconds")
    with pytest.raises(InvalidInput, match="'ws' is paused by its cpu_seconds budget") as info:
        workspaces.start(name="ws", on_progress=world.progress.append, cancel=CancelToken())
    assert info.value.hint and "agentbox budget ws --resume" in info.value.hint
    assert world.backend.calls.count(("start", DOMAIN)) == starts
    assert world.backend.get(name=DOMAIN).state is DomainState.PAUSED
