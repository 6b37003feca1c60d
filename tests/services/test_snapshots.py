"""The clean snapshot, reset (both paths), checkpoints and reclean, on the Fake backend."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from agentbox.backends.base import DomainState
from agentbox.backends.fake import DEFAULT_CAPABILITIES, FakeBackend
from agentbox.errors import BackendError, Busy, GuestError, InvalidInput, NotFound
from agentbox.model.progress import CancelToken
from agentbox.provision.guest_changes import MARK_CLEAN_ARGV
from agentbox.provision.refresh import SEED_BYTES, is_refresh
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.host.locks import workspace_lock
from agentbox.stores.records import WorkspaceRecord
from agentbox.services.snapshots import RestorePath, SnapshotService

from .conftest import World

DOMAIN = "agentbox-ws"


def make(world: World) -> WorkspaceRecord:
    return create_workspace(ctx=world.ctx, request=CreateRequest(name="ws"), on_progress=world.progress.append,
                            cancel=CancelToken())


def events(world: World) -> list[dict]:  # type: ignore[type-arg]
    path = world.ctx.paths.audit_log("ws")
    return [json.loads(line) for line in path.read_text().splitlines()]


def reset(world: World, hooks=()):  # type: ignore[no-untyped-def]
    return SnapshotService(ctx=world.ctx, restore_hooks=hooks).reset(name="ws", on_progress=world.progress.append,
                                                                     cancel=CancelToken())


def test_create_ends_with_a_clean_ram_snapshot(world: World) -> None:
    record = make(world)
    assert record.clean_snapshot == "clean-1" and record.clean_fallback == ""
    [snap] = world.backend.list_snapshots(name=DOMAIN)
    assert snap.name == "clean-1" and snap.with_memory
    # Dirty pages reach the disk before the RAM is saved, with the marker receipts compare against.
    assert list(MARK_CLEAN_ARGV) in world.guest.commands and MARK_CLEAN_ARGV[-1].endswith("; sync")
    assert world.ctx.records.load(name="ws").clean_snapshot == "clean-1"


def test_reset_powers_off_reverts_refreshes_and_runs_the_hooks(world: World) -> None:
    make(world)
    world.backend.calls.clear()
    hooked = []
    outcome = reset(world, hooks=[lambda record: hooked.append(record.name)])
    assert outcome.path is RestorePath.SNAPSHOT and outcome.running and outcome.target == "clean"
    calls = [c for c, _ in world.backend.calls if c in ("destroy", "revert_snapshot", "start")]
    assert calls == ["destroy", "revert_snapshot"]  # no guest cooperation, no cold boot
    [refresh] = [i for i, argv in enumerate(world.guest.commands) if is_refresh(argv)]
    assert len(world.guest.stdins[refresh] or b"") == 8 + SEED_BYTES  # the host time, then the seed
    assert abs(outcome.clock_skew_s or 99) < 1
    assert hooked == ["ws"]
    assert world.ctx.records.load(name="ws").last_reset
    assert events(world)[-1]["event"] == "reset" and events(world)[-1]["details"]["path"] == "snapshot"


def test_two_resets_send_different_seeds(world: World) -> None:
    make(world)
    reset(world)
    reset(world)
    seeds = [s[8:] for s in world.guest.stdins if s and len(s) == 8 + SEED_BYTES]
    assert len(seeds) == 2 and seeds[0] != seeds[1]


def test_a_stopped_or_crashed_workspace_resets_to_running(world: World) -> None:
    make(world)
    for state in (DomainState.STOPPED, DomainState.CRASHED):
        world.backend.set_state(DOMAIN, state)
        assert reset(world).running
        assert world.backend.get(name=DOMAIN).state is DomainState.RUNNING


def test_without_ram_snapshots_reset_recreates_the_disk_and_cold_boots(world: World) -> None:
    world.backend._capabilities = replace(DEFAULT_CAPABILITIES, ram_snapshots=False)
    record = make(world)
    assert record.clean_snapshot == "" and "cannot save" in record.clean_fallback
    world.backend.calls.clear()
    outcome = reset(world)
    assert outcome.path is RestorePath.COLD_BOOT and "cannot save" in outcome.reason
    calls = [c for c, _ in world.backend.calls if c in ("destroy", "delete_volume", "create_overlay", "start")]
    assert calls == ["destroy", "delete_volume", "create_overlay", "start"]
    assert ["cloud-init", "status", "--wait", "--long"] in world.guest.commands[-3:]
    assert events(world)[-1]["details"]["path"] == "cold-boot"


def test_a_refused_snapshot_at_create_falls_back_and_says_why(world: World) -> None:
    world.backend.fail_on.add("create_snapshot")
    record = make(world)
    assert record.clean_snapshot == "" and "injected failure" in record.clean_fallback
    assert any("injected failure" in p.detail for p in world.progress)


def test_checkpoints_save_list_restore_and_delete(world: World) -> None:
    make(world)
    service = SnapshotService(ctx=world.ctx)
    saved = service.checkpoint(name="ws", label="before-upgrade")
    assert saved.with_memory
    assert [c.label for c in service.checkpoints(name="ws")] == ["before-upgrade"]  # clean is not listed
    outcome = service.restore(name="ws", label="before-upgrade", on_progress=world.progress.append,
                              cancel=CancelToken())
    assert outcome.target == "before-upgrade" and outcome.running
    service.delete_checkpoint(name="ws", label="before-upgrade")
    assert service.checkpoints(name="ws") == ()
    with pytest.raises(NotFound, match="no checkpoint"):
        service.restore(name="ws", label="before-upgrade", on_progress=world.progress.append, cancel=CancelToken())
    assert [e["event"] for e in events(world)][-3:] == ["checkpoint", "restore", "checkpoint.deleted"]


def test_a_stopped_checkpoint_restores_stopped(world: World) -> None:
    make(world)
    world.backend.set_state(DOMAIN, DomainState.STOPPED)
    service = SnapshotService(ctx=world.ctx)
    assert not service.checkpoint(name="ws", label="cold").with_memory
    world.backend.set_state(DOMAIN, DomainState.RUNNING)
    assert not service.restore(name="ws", label="cold", on_progress=world.progress.append,
                               cancel=CancelToken()).running


@pytest.mark.parametrize("label", ["clean", "Bad_Label", "", "-x"])
def test_the_clean_state_and_bad_labels_are_refused_as_checkpoints(world: World, label: str) -> None:
    make(world)
    service = SnapshotService(ctx=world.ctx)
    with pytest.raises(InvalidInput):
        service.checkpoint(name="ws", label=label)
    with pytest.raises(InvalidInput):
        service.delete_checkpoint(name="ws", label=label)
    assert [s.name for s in world.backend.list_snapshots(name=DOMAIN)] == ["clean-1"]


def test_a_running_checkpoint_needs_ram_snapshots(world: World) -> None:
    world.backend._capabilities = replace(DEFAULT_CAPABILITIES, ram_snapshots=False)
    make(world)
    with pytest.raises(InvalidInput) as refused:
        SnapshotService(ctx=world.ctx).checkpoint(name="ws", label="one")
    assert "agentbox stop ws" in (refused.value.hint or "")


def test_reclean_replaces_the_clean_state_only_once_the_new_one_exists(world: World) -> None:
    make(world)
    service = SnapshotService(ctx=world.ctx)
    record = service.reclean(name="ws", on_progress=world.progress.append)
    assert record.clean_snapshot == "clean-2"
    assert [s.name for s in world.backend.list_snapshots(name=DOMAIN)] == ["clean-2"]
    world.backend.fail_on.add("create_snapshot")
    record = service.reclean(name="ws", on_progress=world.progress.append)
    # The new snapshot failed: the workspace now cold boots on reset, and says why.
    assert record.clean_snapshot == "" and "injected failure" in record.clean_fallback


def test_reclean_needs_a_running_workspace(world: World) -> None:
    make(world)
    world.backend.set_state(DOMAIN, DomainState.STOPPED)
    with pytest.raises(InvalidInput, match="must be running"):
        SnapshotService(ctx=world.ctx).reclean(name="ws", on_progress=world.progress.append)
    assert world.ctx.records.load(name="ws").clean_snapshot == "clean-1"


def test_reset_of_a_busy_workspace_is_refused(world: World) -> None:
    make(world)
    with workspace_lock(paths=world.ctx.paths, name="ws"), pytest.raises(Busy):
        reset(world)


def test_reset_of_an_unknown_workspace_says_so(world: World) -> None:
    with pytest.raises(NotFound, match="no workspace named 'nope'"):
        SnapshotService(ctx=world.ctx).reset(name="nope", on_progress=world.progress.append, cancel=CancelToken())


def test_fake_backend_snapshot_contract() -> None:
    fake = FakeBackend(owner="o")
    with pytest.raises(NotFound):
        fake.list_snapshots(name="missing")


def test_a_status_read_during_a_checkpoint_never_brings_the_forward_back(world: World) -> None:
    """The TUI refreshes the details every 2 s; a RAM snapshot must not catch a live forward."""
    from agentbox.services.network import NetworkService

    make(world)
    snapshot = world.backend.create_snapshot
    during: list[list[str]] = []

    def snapshot_while_the_tui_looks(**kwargs):  # type: ignore[no-untyped-def]
        before = list(world.egress.ensured)
        NetworkService(ctx=world.ctx).show(name="ws")
        during.append(world.egress.ensured[len(before):])
        return snapshot(**kwargs)

    world.backend.create_snapshot = snapshot_while_the_tui_looks  # type: ignore[method-assign]
    SnapshotService(ctx=world.ctx).checkpoint(name="ws", label="before")
    assert world.egress.forward_stopped == ["ws"]
    assert during == [[]], "show() started the forward in the middle of the snapshot"
    assert world.egress.ensured[-1] == "ws"  # the checkpoint itself brings it back afterwards


def test_a_reset_holds_the_forward_down_through_the_power_cycle_and_releases_it(world: World) -> None:
    make(world)
    world.egress.ensured.clear()
    reset(world)
    assert world.egress.held_for_reset == ["ws"] and world.egress.ensured == ["ws"]


def test_a_failed_checkpoint_says_why_even_when_the_forward_does_not_come_back(world: World) -> None:
    make(world)
    world.backend.fail_on.add("create_snapshot")  # say, QEMU found the storage dir full
    world.egress.fail_start = True  # and the guest, paused by that full disk, takes no forward
    with pytest.raises(BackendError, match="injected"):
        SnapshotService(ctx=world.ctx).checkpoint(name="ws", label="before")
    assert world.egress.ensured[-1] == "ws"  # it was tried all the same
    assert [s.name for s in world.backend.list_snapshots(name="agentbox-ws")] == ["clean-1"]


def test_a_guest_paused_by_its_full_disk_during_a_checkpoint_is_named_as_such(world: World) -> None:
    make(world)

    def full_disk(argv, _stdout):  # type: ignore[no-untyped-def]
        if list(argv[:3]) == ["sudo", "-n", "sh"]:  # unmounting the outbox: QEMU pauses the guest meanwhile
            world.backend.pause(name=DOMAIN)
            raise GuestError("SSH to 127.0.0.1:2222 failed: Timeout opening channel.")
        return None

    world.guest.reply = full_disk
    with pytest.raises(BackendError, match="paused by QEMU: its disk could not be written") as err:
        SnapshotService(ctx=world.ctx).checkpoint(name="ws", label="before")
    assert "No space left on device" in err.value.message and "MiB free in" in err.value.message
    assert "agentbox reset ws" in (err.value.hint or "")
    assert SnapshotService(ctx=world.ctx).checkpoints(name="ws") == ()


def test_a_reverted_guest_that_hangs_is_reverted_once_more_not_waited_out(world: World) -> None:
    make(world)
    silent = {"left": 1}

    def hang_once(argv, _stdout):  # type: ignore[no-untyped-def]
        if is_refresh(argv) and silent["left"]:
            silent["left"] -= 1
            raise GuestError("SSH to 127.0.0.1:2222 failed: Error reading SSH protocol banner")
        return None

    world.guest.reply, world.guest.answers = hang_once, False  # the first revert's guest never answers
    world.backend.calls.clear()
    outcome = SnapshotService(ctx=world.ctx).reset(name="ws", on_progress=world.progress.append,
                                                   cancel=CancelToken())
    assert outcome.running and outcome.path is RestorePath.SNAPSHOT
    assert [m for m, _ in world.backend.calls].count("revert_snapshot") == 2
    assert any("again: the reverted guest did not answer SSH" in p.detail for p in world.progress)


def test_a_reverted_guest_silent_twice_is_an_error_with_the_console_hint(world: World) -> None:
    make(world)

    def hang(argv, _stdout):  # type: ignore[no-untyped-def]
        if is_refresh(argv):
            raise GuestError("SSH to 127.0.0.1:2222 failed: Error reading SSH protocol banner")
        return None

    world.guest.reply, world.guest.answers = hang, False
    world.backend.calls.clear()
    with pytest.raises(GuestError, match="did not answer SSH") as err:
        SnapshotService(ctx=world.ctx).reset(name="ws", on_progress=world.progress.append, cancel=CancelToken())
    assert "console" in (err.value.hint or "")
    assert [m for m, _ in world.backend.calls].count("revert_snapshot") == 2
