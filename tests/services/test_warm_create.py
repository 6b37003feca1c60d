"""Warm create on the Fake: a golden state built once, clones restored from it, the clone's
identity given over SSH with the bootstrap key, and the cold path wherever that fails."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agentbox.backends.fake import DEFAULT_CAPABILITIES, FakeBackend
from agentbox.model.progress import CancelToken
from agentbox.provision.guest_changes import CLEAN_MARK, MARK_CLEAN_ARGV
from agentbox.provision.identity import GOLDEN_HOSTNAME
from agentbox.provision.refresh import refresh_input
from agentbox.services.create import WARM_STEPS, CreateRequest, create_workspace
from agentbox.services.golden import GoldenStore
from agentbox.services.images import ImageService
from agentbox.errors import InvalidInput

from .conftest import World


def _warm_world(world: World, **backend_kwargs: object) -> World:
    backend = FakeBackend(owner="test-owner", capabilities=replace(DEFAULT_CAPABILITIES, memory_restore=True),
                          **backend_kwargs)  # type: ignore[arg-type]
    return replace(world, ctx=replace(world.ctx, backend=backend), backend=backend)


def _create(world: World, name: str, **kwargs: object):  # type: ignore[no-untyped-def]
    return create_workspace(ctx=world.ctx, request=CreateRequest(name=name, **kwargs),  # type: ignore[arg-type]
                            on_progress=world.progress.append, cancel=CancelToken())


def _details(world: World) -> str:
    return "\n".join(f"{p.step}: {p.detail}" for p in world.progress)


def test_two_clones_share_one_golden_state_and_get_their_own_identity(world: World) -> None:
    world = _warm_world(world)
    first = _create(world, "one", warm=True)
    second = _create(world, "two", warm=True)
    [golden] = GoldenStore(ctx=world.ctx).list()
    assert first.golden_id == second.golden_id == golden.golden_id
    calls = world.backend.calls
    assert [c for c in calls if c[0] == "save_memory"] == [("save_memory", f"agentbox-{golden.golden_id}")]
    assert ("restore_memory", "agentbox-one") in calls and ("restore_memory", "agentbox-two") in calls
    assert ("start", "agentbox-one") not in calls and ("start", "agentbox-two") not in calls
    assert world.backend.get(name=f"agentbox-{golden.golden_id}") is None  # the golden guest is gone
    # Each clone's overlay sits on the golden disk, which nothing writes any more.
    assert str(golden.disk) in first.storage.disk.read_text()
    assert golden.disk.stat().st_mode & 0o222 == 0
    # The identity: sent with each clone's own hostname, user key and host key.
    identities = [stdin for stdin in world.guest.stdins if stdin and GOLDEN_HOSTNAME.encode() not in stdin
                  and b"PRIVATE KEY" in stdin]
    assert len(identities) == 2
    for record, stdin in zip((first, second), identities, strict=True):
        public = world.ctx.records.files(name=record.name).client_key.with_suffix(".pub").read_text().strip()
        identity = stdin[len(refresh_input()):]  # after the clock and RNG seed
        assert identity.startswith(f"{record.name}\n{public}\n{record.host_key_public}\n".encode())
    assert first.host_key_public != second.host_key_public
    assert [g.golden_id for g in ImageService(ctx=world.ctx).golden_states()] == [golden.golden_id]


def test_a_changed_recipe_makes_a_new_golden_state(world: World) -> None:
    world = _warm_world(world)
    small = _create(world, "small", warm=True, memory_mib=512)
    large = _create(world, "large", warm=True, memory_mib=768)
    assert small.golden_id != large.golden_id
    assert len(GoldenStore(ctx=world.ctx).list()) == 2


def test_no_warm_cold_boots(world: World) -> None:
    world = _warm_world(world)
    record = _create(world, "cold", warm=False)
    assert record.golden_id == ""
    assert ("start", "agentbox-cold") in world.backend.calls
    assert not GoldenStore(ctx=world.ctx).list()


def test_a_failed_restore_falls_back_to_a_cold_boot_and_says_so(world: World) -> None:
    world = _warm_world(world, fail_on={"restore_memory"})
    record = _create(world, "ws", warm=True)
    assert record.golden_id == ""
    assert ("start", "agentbox-ws") in world.backend.calls
    assert "the warm clone failed" in _details(world) and "cold boot instead" in _details(world)
    assert world.backend.get(name="agentbox-ws") is not None


def test_without_the_capability_create_cold_boots_and_says_so(world: World) -> None:
    record = _create(world, "ws", warm=True)  # the default Fake cannot restore RAM into another domain
    assert record.golden_id == ""
    assert "cannot restore saved RAM" in _details(world)


def test_image_rm_refuses_while_a_clone_sits_on_the_golden_state(world: World) -> None:
    world = _warm_world(world)
    record = _create(world, "one", warm=True)
    store = GoldenStore(ctx=world.ctx)
    with pytest.raises(InvalidInput, match="base disk of workspace"):
        store.remove(golden_id=record.golden_id)
    world.ctx.records.remove(name="one")
    store.remove(golden_id=record.golden_id)
    assert not store.list()


def test_a_warm_create_reports_its_own_steps_in_order(world: World) -> None:
    world = _warm_world(world)
    _create(world, "ws", warm=True)
    steps = [p.step for p in world.progress if p.step in WARM_STEPS and p.total == len(WARM_STEPS)]
    assert steps == list(WARM_STEPS)


def test_the_supervisor_starts_before_the_restore_and_connects_only_after_the_clean_snapshot(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world = _warm_world(world)
    seen: dict[str, tuple[list[str], list[str]]] = {}
    for call in ("restore_memory", "create_snapshot"):
        real = getattr(world.backend, call)

        def spy(*args: object, _real=real, _call=call, **kwargs: object) -> object:  # type: ignore[no-untyped-def]
            seen.setdefault(_call, (list(world.egress.started_early), list(world.egress.ensured)))
            return _real(*args, **kwargs)

        monkeypatch.setattr(world.backend, call, spy)
    _create(world, "ws", warm=True)
    # Started, the forward held down, before the clone's RAM is restored; not yet up at the
    # clean snapshot (a RAM snapshot must not hold a live forward); up once create returns.
    assert seen["restore_memory"] == (["ws"], [])
    assert seen["create_snapshot"] == (["ws"], [])
    assert world.egress.ensured == ["ws"] and "ws" in world.egress.running


def test_a_clones_identity_round_trip_also_marks_the_clean_state(world: World) -> None:
    world = _warm_world(world)
    _create(world, "ws", warm=True)
    identity = [" ".join(argv) for argv, stdin in zip(world.guest.commands, world.guest.stdins, strict=True)
                if stdin and b"PRIVATE KEY" in stdin and GOLDEN_HOSTNAME.encode() not in stdin]
    assert len(identity) == 1 and CLEAN_MARK in identity[0] and "syscall(162)" in identity[0]  # sync(2)
    # ... so no login of its own for the marker before the clean snapshot (a cold create has one).
    assert list(MARK_CLEAN_ARGV) not in world.guest.commands
    _create(world, "cold", warm=False)
    assert list(MARK_CLEAN_ARGV) in world.guest.commands
