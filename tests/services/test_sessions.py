"""Sessions and disposable runs on the Fake backend, with a recording timer."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from agentbox.backends.base import DomainState
from agentbox.errors import Cancelled, InvalidInput
from agentbox.model.progress import CancelToken
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.services.sessions import TIMED_OUT_EXIT, SessionService
from agentbox.services.snapshots import RestorePath, SnapshotService
from agentbox.services.workspaces import WorkspaceService

from .conftest import World


def service(world: World) -> SessionService:
    return SessionService(ctx=world.ctx, workspaces=WorkspaceService(ctx=world.ctx),
                          snapshots=SnapshotService(ctx=world.ctx))


def make(world: World, name: str = "ws") -> None:
    create_workspace(ctx=world.ctx, request=CreateRequest(name=name), on_progress=world.progress.append,
                     cancel=CancelToken())


def events(world: World, name: str = "ws") -> list[str]:
    return [json.loads(line)["event"] for line in world.ctx.paths.audit_log(name).read_text().splitlines()]


def test_a_session_ends_with_a_reset(world: World) -> None:
    make(world)
    sessions = service(world)
    session = sessions.start(name="ws", max_minutes=None, on_progress=world.progress.append, cancel=CancelToken())
    assert sessions.current(name="ws") == session
    end = sessions.end(name="ws", reason="ended by the user", on_progress=world.progress.append,
                       cancel=CancelToken())
    assert end is not None and end.reset is not None and end.reset.path is RestorePath.SNAPSHOT
    assert sessions.current(name="ws") is None
    assert events(world)[-4:] == ["session.started", "session.receipt", "reset", "session.ended"]


def test_a_session_starts_a_stopped_workspace(world: World) -> None:
    make(world)
    world.backend.set_state("agentbox-ws", DomainState.STOPPED)
    service(world).start(name="ws", max_minutes=None, on_progress=world.progress.append, cancel=CancelToken())
    assert world.backend.get(name="agentbox-ws").state is DomainState.RUNNING


def test_one_session_at_a_time_and_no_end_without_one(world: World) -> None:
    make(world)
    sessions = service(world)
    with pytest.raises(InvalidInput, match="not in a session"):
        sessions.end(name="ws", reason="x", on_progress=world.progress.append, cancel=CancelToken())
    sessions.start(name="ws", max_minutes=None, on_progress=world.progress.append, cancel=CancelToken())
    with pytest.raises(InvalidInput, match="already in a session"):
        sessions.start(name="ws", max_minutes=None, on_progress=world.progress.append, cancel=CancelToken())


@pytest.mark.parametrize("minutes", [0, -1, 10**7])
def test_a_bad_time_limit_is_refused(world: World, minutes: float) -> None:
    make(world)
    with pytest.raises(InvalidInput, match="max-minutes"):
        service(world).start(name="ws", max_minutes=minutes, on_progress=world.progress.append, cancel=CancelToken())


def test_the_policy_can_keep_the_state_after_a_session(world: World) -> None:
    make(world)
    record = world.ctx.records.load(name="ws")
    world.ctx.records.save(record=replace(record, reset_after_session=False))
    sessions = service(world)
    sessions.start(name="ws", max_minutes=None, on_progress=world.progress.append, cancel=CancelToken())
    end = sessions.end(name="ws", reason="done", on_progress=world.progress.append, cancel=CancelToken())
    assert end is not None and end.reset is None
    assert "reset" not in events(world)


def test_a_time_limit_is_the_deadline_the_supervisor_ends_the_session_at(world: World) -> None:
    make(world)
    sessions = service(world)
    session = sessions.start(name="ws", max_minutes=5, on_progress=world.progress.append, cancel=CancelToken())
    assert sessions.deadline("ws") == (session.id, session.deadline)
    started = world.ctx.clock()
    left = datetime.fromisoformat(session.deadline) - started
    assert timedelta(minutes=4, seconds=59) < left <= timedelta(minutes=5)
    sessions.expire("ws", session.id)  # the supervisor's call once the deadline passed
    assert sessions.current(name="ws") is None and sessions.deadline("ws") is None
    assert events(world)[-4:] == ["session.started", "session.receipt", "reset", "session.ended"]
    ended = json.loads(world.ctx.paths.audit_log("ws").read_text().splitlines()[-1])
    assert ended["details"]["reason"] == "time limit reached"


def test_a_late_expiry_of_an_ended_session_does_nothing(world: World) -> None:
    make(world)
    sessions = service(world)
    session = sessions.start(name="ws", max_minutes=5, on_progress=world.progress.append, cancel=CancelToken())
    sessions.end(name="ws", reason="done", on_progress=world.progress.append, cancel=CancelToken())
    before = events(world)
    sessions.expire("ws", session.id)
    assert events(world) == before


def test_a_reset_during_a_session_writes_its_receipt_first(world: World) -> None:
    make(world)
    sessions = service(world)
    snapshots = SnapshotService(ctx=world.ctx, end_session=sessions.reset_in_session)
    sessions = SessionService(ctx=world.ctx, workspaces=WorkspaceService(ctx=world.ctx), snapshots=snapshots)
    sessions.start(name="ws", max_minutes=None, on_progress=world.progress.append, cancel=CancelToken())
    outcome = snapshots.reset(name="ws", on_progress=world.progress.append, cancel=CancelToken())
    assert outcome.path is RestorePath.SNAPSHOT and sessions.current(name="ws") is None
    assert events(world)[-4:] == ["session.started", "session.receipt", "reset", "session.ended"]
    # Without a session, a reset is only a reset.
    snapshots.reset(name="ws", on_progress=world.progress.append, cancel=CancelToken())
    assert events(world)[-2:] == ["session.ended", "reset"]


def test_a_reset_resets_even_when_the_policy_keeps_the_state_after_sessions(world: World) -> None:
    make(world)
    record = world.ctx.records.load(name="ws")
    world.ctx.records.save(record=replace(record, reset_after_session=False))
    sessions = service(world)
    snapshots = SnapshotService(ctx=world.ctx, end_session=sessions.reset_in_session)
    sessions.start(name="ws", max_minutes=None, on_progress=world.progress.append, cancel=CancelToken())
    snapshots.reset(name="ws", on_progress=world.progress.append, cancel=CancelToken())
    assert "reset" in events(world) and sessions.current(name="ws") is None


def test_run_in_a_throw_away_workspace_returns_the_code_and_leaves_nothing(world: World) -> None:
    world.guest.exit_code = 3
    outcome = service(world).run(argv=["make", "test"], name=None, template=None, max_minutes=None,
                                 stdout=lambda _: None, stderr=lambda _: None, on_progress=world.progress.append,
                                 cancel=CancelToken())
    assert outcome.exit_code == 3 and outcome.temporary and outcome.workspace.startswith("run-")
    assert ["make", "test"] in world.guest.commands
    assert WorkspaceService(ctx=world.ctx).list() == ()
    assert world.leftovers() == []


def test_run_in_a_named_workspace_resets_it_afterwards(world: World) -> None:
    make(world)
    outcome = service(world).run(argv=["true"], name="ws", template=None, max_minutes=None,
                                 stdout=lambda _: None, stderr=lambda _: None, on_progress=world.progress.append,
                                 cancel=CancelToken())
    assert outcome.exit_code == 0 and not outcome.temporary
    assert outcome.end.reset is not None
    assert [w.name for w in WorkspaceService(ctx=world.ctx).list()] == ["ws"]


def test_run_stops_the_command_at_its_time_limit(world: World) -> None:
    make(world)
    outcome = service(world).run(argv=["hang"], name="ws", template=None, max_minutes=0.002,
                                 stdout=lambda _: None, stderr=lambda _: None, on_progress=world.progress.append,
                                 cancel=CancelToken())
    assert outcome.timed_out and outcome.exit_code == TIMED_OUT_EXIT
    assert outcome.end.reason == "time limit reached" and outcome.end.reset is not None


def test_an_interrupted_run_still_ends_its_session_with_a_reset(world: World) -> None:
    make(world)
    cancel = CancelToken()
    cancel.cancel()  # as Ctrl-C would, before the command returns
    with pytest.raises(Cancelled):
        service(world).run(argv=["hang"], name="ws", template=None, max_minutes=None, stdout=lambda _: None,
                           stderr=lambda _: None, on_progress=world.progress.append, cancel=cancel)
    assert service(world).current(name="ws") is None
    assert events(world)[-2:] == ["reset", "session.ended"]


def test_a_runs_own_session_is_left_to_the_run_while_it_lives_then_to_the_supervisor(world: World) -> None:
    make(world)
    sessions = service(world)
    session = sessions.start(name="ws", max_minutes=5, on_progress=world.progress.append, cancel=CancelToken(),
                             owned=True)
    assert sessions.deadline("ws") is None, "the run ends its own session at the deadline"
    # The run is killed (its terminal closed with SIGKILL): its identity now names nobody.
    path = world.ctx.records.files(name="ws").session
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "owner_start": data["owner_start"] - 1}))
    assert sessions.deadline("ws") == (session.id, session.deadline)
