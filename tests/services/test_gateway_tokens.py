"""Phantom tokens through a workspace's life, on the Fake backend with a scripted guest: a
new one in the guest's profile at create, at session start and in a reset's refresh; the
session's own dies at its end; the template's budget rides along."""

from __future__ import annotations

from dataclasses import replace

from agentbox.model.api_use import ApiBudget
from agentbox.model.progress import CancelToken
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.services.gateway_access import GUEST_PROFILE, GatewayAccess
from agentbox.services.sessions import SessionService
from agentbox.services.snapshots import SnapshotService
from agentbox.services.workspaces import WorkspaceService

from .conftest import World


def _installed(world: World) -> list[str]:
    """Guest commands that wrote the gateway profile (each names its token)."""
    return [" ".join(argv) for argv in world.guest.commands if GUEST_PROFILE in " ".join(argv)]


def test_a_token_at_create_a_new_one_per_session_and_per_reset(world: World) -> None:
    create_workspace(ctx=world.ctx, request=CreateRequest(name="ws"), on_progress=world.progress.append,
                     cancel=CancelToken())
    access = GatewayAccess(ctx=world.ctx)
    created = access.current(name="ws")
    assert created is not None and created.session == ""
    assert created.token in _installed(world)[-1]

    snapshots = SnapshotService(ctx=world.ctx)
    sessions = SessionService(ctx=world.ctx, workspaces=WorkspaceService(ctx=world.ctx), snapshots=snapshots)
    session = sessions.start(name="ws", max_minutes=None, on_progress=world.progress.append, cancel=CancelToken())
    own = access.current(name="ws")
    assert own is not None and own.session == session.id and own.token != created.token
    assert own.token in _installed(world)[-1]

    sessions.end(name="ws", reason="done", on_progress=world.progress.append, cancel=CancelToken())
    after = access.current(name="ws")
    assert after is not None and after.token not in (own.token, created.token)  # minted by the reset
    assert after.token in _installed(world)[-1]  # in the reset's refresh round trip
    assert not any(after.token in text for text in _installed(world)[:-1])

    snapshots.reset(name="ws", on_progress=world.progress.append, cancel=CancelToken())
    assert access.current(name="ws") != after


def test_a_session_kept_without_reset_leaves_no_token_and_the_budget_rides_along(world: World) -> None:
    create_workspace(ctx=world.ctx, request=CreateRequest(name="ws"), on_progress=world.progress.append,
                     cancel=CancelToken())
    record = world.ctx.records.load(name="ws")
    assert record is not None
    world.ctx.records.save(record=replace(record, reset_after_session=False, budget_requests=5, budget_tokens=900))
    sessions = SessionService(ctx=world.ctx, workspaces=WorkspaceService(ctx=world.ctx),
                              snapshots=SnapshotService(ctx=world.ctx))
    sessions.start(name="ws", max_minutes=None, on_progress=world.progress.append, cancel=CancelToken())
    access = GatewayAccess(ctx=world.ctx)
    token = access.current(name="ws")
    assert token is not None and token.budget == ApiBudget(requests=5, tokens=900)
    sessions.end(name="ws", reason="done", on_progress=world.progress.append, cancel=CancelToken())
    assert access.current(name="ws") is None  # dead; the next session start mints one
