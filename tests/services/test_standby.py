"""Standby on the Fake: a paused clean copy in the workspace's second domain, a reset that is
a swap to it (the SSH port stays, the forward is held down until the copy answers), a new
copy in the freed slot, and every path where the swap cannot happen resetting in place."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from agentbox.backends.base import DomainState
from agentbox.backends.fake import DEFAULT_CAPABILITIES, FakeBackend
from agentbox.bootstrap import build_services
from agentbox.errors import InvalidInput
from agentbox.model.progress import CancelToken
from agentbox.model.workspace import StandbyState, WorkspaceState
from agentbox.provision.refresh import is_refresh
from agentbox.services import doctor
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.services.doctor import CheckStatus, run_doctor
from agentbox.services.shares import ShareService
from agentbox.services.snapshots import RestorePath, SnapshotService
from agentbox.services.standby import STANDBY_SNAPSHOT, StandbyService
from agentbox.services.workspaces import WorkspaceService
from agentbox.stores.records import WorkspaceRecord

from .conftest import World

A, B = "agentbox-ws", "agentbox-ws.b"


@pytest.fixture()
def able(world: World) -> World:
    """The world on a backend that can keep a copy standing by (libvirt on this machine can)."""
    backend = FakeBackend(owner="test-owner", capabilities=replace(DEFAULT_CAPABILITIES, standby=True))
    return replace(world, ctx=replace(world.ctx, backend=backend), backend=backend)


def make(world: World, **kwargs: object) -> WorkspaceRecord:
    return create_workspace(ctx=world.ctx, request=CreateRequest(name="ws", **kwargs),  # type: ignore[arg-type]
                            on_progress=world.progress.append, cancel=CancelToken())


def reset(world: World):  # type: ignore[no-untyped-def]
    return SnapshotService(ctx=world.ctx).reset(name="ws", on_progress=world.progress.append, cancel=CancelToken())


def record(world: World) -> WorkspaceRecord:
    found = world.ctx.records.load(name="ws")
    assert found is not None
    return found


def state(world: World, domain: str) -> DomainState | None:
    info = world.backend.get(name=domain)
    return None if info is None else info.state


def standby(world: World, *, on: bool) -> WorkspaceRecord:
    services = build_services(ctx=world.ctx)
    return services.standby.set(name="ws", on=on, on_progress=world.progress.append, cancel=CancelToken())


def test_create_with_standby_leaves_a_paused_clean_copy_in_the_second_slot(able: World) -> None:
    made = make(able, standby=True)
    assert made.domain == A and state(able, A) is DomainState.RUNNING
    assert state(able, B) is DomainState.PAUSED  # restored, never ran
    assert [s.name for s in able.backend.list_snapshots(name=B)] == [STANDBY_SNAPSHOT]
    storage = Path(made.storage_dir)
    assert (storage / "clean-1.qcow2").stat().st_mode & 0o222 == 0  # both slots' overlays read through it
    assert (storage / "clean-1.save").is_file()
    assert str(storage / "clean-1.qcow2") in (storage / "disk.b.qcow2").read_text()
    assert made.standby_snapshot == STANDBY_SNAPSHOT and made.standby_port not in (0, made.ssh_port)
    assert able.backend.ssh_port_of(name=B) == made.standby_port
    [workspace] = WorkspaceService(ctx=able.ctx).list()  # one workspace, not two
    assert (workspace.name, workspace.state, workspace.standby) == ("ws", WorkspaceState.RUNNING, StandbyState.READY)


def test_a_reset_swaps_to_the_copy_on_the_same_port_and_prepares_the_next(able: World) -> None:
    made = make(able, standby=True)
    able.guest.commands.clear()
    able.backend.calls.clear()
    outcome = reset(able)
    assert outcome.path is RestorePath.STANDBY and outcome.running and outcome.reason == ""
    now = record(able)
    assert (now.domain, now.ssh_port, now.clean_snapshot) == (B, made.ssh_port, STANDBY_SNAPSHOT)
    assert able.backend.ssh_port_of(name=B) == made.ssh_port  # the copy took the workspace's port
    calls = [c for c, _ in able.backend.calls]
    assert "revert_snapshot" not in calls[:calls.index("resume")]  # no revert before the guest is back
    assert calls.index("pause") < calls.index("drop_ssh_port") < calls.index("move_ssh_port") < calls.index("resume")
    assert any(is_refresh(argv) for argv in able.guest.commands)  # clock, RNG and machine-id, on the copy
    assert able.egress.forward_held_down == ["ws"]  # the old guest never had the forward again
    # The old domain went; a fresh copy stands by in its slot, on the new export-backed disk.
    assert state(able, A) is DomainState.PAUSED and now.standby_snapshot == STANDBY_SNAPSHOT
    assert ("destroy", A) in able.backend.calls and ("restore_memory", A) in able.backend.calls
    again = reset(able)
    assert again.path is RestorePath.STANDBY and record(able).domain == A
    assert able.backend.ssh_port_of(name=A) == made.ssh_port
    assert state(able, B) is DomainState.PAUSED


def test_shares_are_plugged_into_the_copy_that_takes_over(able: World, tmp_path: Path) -> None:
    make(able, standby=True)
    project = tmp_path / "project"
    project.mkdir()
    ShareService(ctx=able.ctx).add(name="ws", source=str(project))
    assert "project" in able.backend.attached(name=A)[0]
    reset(able)
    assert "project" in able.backend.attached(name=B)[0]


def test_with_checkpoints_the_reset_reverts_in_place_and_the_copy_stays(able: World) -> None:
    made = make(able, standby=True)
    reset(able)  # the copy (defined on a spare port) now runs, on the workspace's port
    services = build_services(ctx=able.ctx)
    services.snapshots.checkpoint(name="ws", label="before")
    outcome = reset(able)
    assert outcome.path is RestorePath.SNAPSHOT and "checkpoints" in outcome.reason
    assert record(able).domain == B and state(able, A) is DomainState.PAUSED
    # Reverted to the clean snapshot taken while it stood by: still on the workspace's port.
    assert able.backend.ssh_port_of(name=B) == made.ssh_port
    assert [c.label for c in services.snapshots.checkpoints(name="ws")] == ["before"]


def test_a_failed_swap_resets_in_place_and_says_why(able: World) -> None:
    make(able, standby=True)
    able.backend.fail_on.add("move_ssh_port")
    outcome = reset(able)
    assert outcome.path is RestorePath.SNAPSHOT and outcome.running and "swap failed" in outcome.reason
    now = record(able)
    assert now.domain == A and state(able, A) is DomainState.RUNNING
    assert now.standby_snapshot == STANDBY_SNAPSHOT and state(able, B) is DomainState.PAUSED  # prepared again
    assert any(r["event"] == "standby.failed" for r in _events(able))


def test_stop_frees_the_copy_and_start_makes_a_new_one(able: World) -> None:
    make(able, standby=True)
    workspaces = WorkspaceService(ctx=able.ctx)
    workspaces.stop(name="ws", force=True, on_progress=able.progress.append, cancel=CancelToken())
    assert able.backend.get(name=B) is None and record(able).standby_snapshot == ""
    assert workspaces.get(name="ws").standby is StandbyState.WAITING
    workspaces.start(name="ws", on_progress=able.progress.append, cancel=CancelToken())
    assert state(able, B) is DomainState.PAUSED and workspaces.get(name="ws").standby is StandbyState.READY


def test_standby_on_resets_a_running_workspace_and_off_removes_the_copy(able: World) -> None:
    made = make(able)
    assert made.standby is False and able.backend.get(name=B) is None
    on = standby(able, on=True)
    assert on.standby and on.standby_export == 1 and state(able, B) is DomainState.PAUSED
    assert any(r["event"] == "reset" for r in _events(able))  # the copy is of the clean state, not of now
    off = standby(able, on=False)
    assert not off.standby and off.standby_snapshot == "" and able.backend.get(name=B) is None
    assert not list(Path(off.storage_dir).glob("clean-*.save"))  # the saved RAM goes; the disk may be needed
    assert reset(able).path is RestorePath.SNAPSHOT


def test_standby_on_is_refused_during_a_session_and_where_the_backend_cannot(able: World, world: World) -> None:
    make(able)
    build_services(ctx=able.ctx).sessions.start(name="ws", max_minutes=None, on_progress=able.progress.append,
                                                cancel=CancelToken())
    with pytest.raises(InvalidInput, match="session is running"):
        standby(able, on=True)
    create_workspace(ctx=world.ctx, request=CreateRequest(name="plain"), on_progress=world.progress.append,
                     cancel=CancelToken())  # the same files, on a backend without the capability
    with pytest.raises(InvalidInput, match="cannot keep a paused copy"):
        StandbyService(ctx=world.ctx, reset_locked=lambda *_: None).set(
            name="plain", on=True, on_progress=world.progress.append, cancel=CancelToken())


def test_a_template_asking_for_standby_on_an_unable_backend_creates_without_it(world: World) -> None:
    made = make(world, standby=True)
    assert made.standby is False and world.backend.get(name=B) is None
    assert any("no standby copy" in p.detail for p in world.progress)


def test_reclean_drops_the_copy_and_the_next_reset_keeps_the_new_clean_state(able: World) -> None:
    make(able, standby=True)
    services = build_services(ctx=able.ctx)
    services.snapshots.reclean(name="ws", on_progress=able.progress.append)
    assert able.backend.get(name=B) is None and record(able).standby_export == 0
    outcome = reset(able)
    assert outcome.path is RestorePath.SNAPSHOT  # in place: no copy of the new clean state yet
    now = record(able)
    assert now.standby_export == 2 and state(able, B) is DomainState.PAUSED
    assert str(Path(now.storage_dir) / "clean-2.qcow2") in (Path(now.storage_dir) / "disk.b.qcow2").read_text()


def test_destroy_removes_both_domains_and_every_file(able: World) -> None:
    make(able, standby=True)
    reset(able)  # the running one is now the second slot
    WorkspaceService(ctx=able.ctx).destroy(name="ws", on_progress=able.progress.append)
    assert able.backend.get(name=A) is None and able.backend.get(name=B) is None
    assert able.leftovers() == []


def _events(world: World) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in world.ctx.paths.audit_log("ws").read_text().splitlines()]


def test_doctor_says_how_much_ram_the_copies_hold_and_warns_when_the_next_may_not_fit(
        able: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meminfo = tmp_path / "meminfo"
    monkeypatch.setattr(doctor, "MEMINFO", meminfo)
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   20480000 kB\n")
    [before] = [c for c in run_doctor(ctx=able.ctx).checks if c.name == "standby"]
    assert before.status is CheckStatus.OK and "no standby copies" in before.detail
    ws = make(able, standby=True)
    [held] = [c for c in run_doctor(ctx=able.ctx).checks if c.name == "standby"]
    assert held.status is CheckStatus.OK
    assert f"1 standby copy (ws) holds {ws.resources.memory_mib} MiB" in held.detail
    assert "20000 MiB available" in held.detail
    meminfo.write_text(f"MemAvailable:   {(ws.resources.memory_mib - 1) * 1024} kB\n")
    [short] = [c for c in run_doctor(ctx=able.ctx).checks if c.name == "standby"]
    assert short.status is CheckStatus.WARN and "may not fit" in short.detail
    assert short.hint == f"agentbox standby ws off frees {ws.resources.memory_mib} MiB"
