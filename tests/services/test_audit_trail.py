"""The audit trail across a workspace's lives: kept by destroy, continued by a new create,
removed only by purge."""

from __future__ import annotations

import pytest

from agentbox.audit import (
    DECISION_EVENT,
    GENESIS,
    HEAD_EVENT,
    AuditLog,
    BreakKind,
    decision_trail,
    log_files,
    read_anchors,
    read_records,
    verify_chain,
)
from agentbox.model.progress import CancelToken
from agentbox.services.audit import AuditService
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.services.snapshots import SnapshotService
from agentbox.services.workspaces import WorkspaceService

from .conftest import World


def noop(_: object) -> None:
    pass


@pytest.fixture()
def service(world: World) -> WorkspaceService:
    create_workspace(ctx=world.ctx, request=CreateRequest(name="ws"), on_progress=noop, cancel=CancelToken())
    return WorkspaceService(ctx=world.ctx)


def test_the_log_lives_outside_the_workspace_dir(service: WorkspaceService, world: World) -> None:
    log = world.ctx.paths.audit_log("ws")
    assert log == world.ctx.paths.data_dir / "audit" / "ws.jsonl" and log.is_file()
    assert not log.is_relative_to(world.ctx.paths.workspace_dir("ws"))


def test_destroy_keeps_the_log_and_a_new_create_continues_the_chain(service: WorkspaceService,
                                                                   world: World) -> None:
    service.destroy(name="ws", on_progress=noop)
    log = world.ctx.paths.audit_log("ws")
    assert [r.event for r in read_records(path=log)][-1] == "destroyed"

    create_workspace(ctx=world.ctx, request=CreateRequest(name="ws"), on_progress=noop, cancel=CancelToken())
    records = list(read_records(path=log))
    assert [r.event for r in records] == ["create.started", "created", "destroyed", "create.started", "created"]
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    result = verify_chain(path=log)
    assert result.intact and result.records == 5


def test_destroy_with_purge_removes_the_log_and_the_next_life_starts_fresh(service: WorkspaceService,
                                                                          world: World) -> None:
    service.destroy(name="ws", on_progress=noop, purge=True)
    log = world.ctx.paths.audit_log("ws")
    assert not log.exists() and world.leftovers() == []

    create_workspace(ctx=world.ctx, request=CreateRequest(name="ws"), on_progress=noop, cancel=CancelToken())
    first = next(read_records(path=log))
    assert (first.event, first.seq, first.prev) == ("create.started", 1, GENESIS)


def test_purge_removes_every_rotated_segment(service: WorkspaceService, world: World) -> None:
    path = world.ctx.paths.audit_log("ws")
    log = AuditLog(path=path, rotate_bytes=500)
    for n in range(20):
        log.append(event="exec", details={"n": n})
    assert len(log_files(path)) > 3 and verify_chain(path=path).intact
    service.destroy(name="ws", on_progress=noop, purge=True)
    assert list(path.parent.iterdir()) == []


def test_lifecycle_moments_anchor_the_head_and_a_cut_log_then_fails(service: WorkspaceService, world: World) -> None:
    snapshots = SnapshotService(ctx=world.ctx)
    snapshots.checkpoint(name="ws", label="before")
    snapshots.reset(name="ws", on_progress=noop, cancel=CancelToken())
    service.exec(name="ws", argv=["true"], stdout=noop, stderr=noop)  # not a lifecycle moment: no anchor
    service.stop(name="ws", force=True, on_progress=noop, cancel=CancelToken())
    service.destroy(name="ws", on_progress=noop)
    log = world.ctx.paths.audit_log("ws")
    anchors = read_anchors(log=log).anchors
    assert [a.why for a in anchors] == ["created", "checkpoint before", "reset", "stopped", "destroyed"]
    by_seq = {r.seq: r for r in read_records(path=log)}
    assert [by_seq[a.seq].event for a in anchors] == ["created", "checkpoint", "reset", "stopped", "destroyed"]
    assert all(by_seq[a.seq].digest == a.hash for a in anchors)
    audit = AuditService(paths=world.ctx.paths)
    assert audit.verify(name="ws").intact

    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-2]))  # "stopped" and "destroyed" gone: the chain alone still holds
    result = audit.verify(name="ws")
    assert result.first_break is not None and result.first_break.kind is BreakKind.TRUNCATED
    assert f"ends at record {len(lines) - 2}" in result.first_break.detail
    assert f"(destroyed) vouches for record {len(lines)}" in result.first_break.detail


def test_purge_removes_the_anchors_file(service: WorkspaceService, world: World) -> None:
    service.stop(name="ws", force=True, on_progress=noop, cancel=CancelToken())
    anchors = world.ctx.paths.audit_dir / "ws.anchors.jsonl"
    assert anchors.is_file()
    service.destroy(name="ws", on_progress=noop, purge=True)
    assert not anchors.exists()


def test_lifecycle_moments_note_the_decision_trail_head_and_verify_covers_it(service: WorkspaceService,
                                                                           world: World) -> None:
    trail = decision_trail(path=world.ctx.records.files(name="ws").net_log)
    for n in range(3):
        trail.append(event=DECISION_EVENT, details={"host": f"h{n}.example", "allowed": False})
    SnapshotService(ctx=world.ctx).reset(name="ws", on_progress=noop, cancel=CancelToken())
    trail.append(event=DECISION_EVENT, details={"host": "h3.example", "allowed": True})
    service.stop(name="ws", force=True, on_progress=noop, cancel=CancelToken())
    log = world.ctx.paths.audit_log("ws")
    heads = [r.details for r in read_records(path=log) if r.event == HEAD_EVENT]
    assert [(h["seq"], h["why"]) for h in heads] == [(3, "reset"), (4, "stopped")]
    assert heads[-1]["hash"] == trail.head().hash  # type: ignore[union-attr]
    by_seq = {r.seq: r for r in read_records(path=log)}
    assert by_seq[read_anchors(log=log).anchors[-1].seq].event == HEAD_EVENT  # the audit anchor covers it
    audit = AuditService(paths=world.ctx.paths)
    assert audit.verify_trail(name="ws").intact

    net = trail.path
    net.write_bytes(b"".join(net.read_bytes().splitlines(keepends=True)[:-1]))
    cut = audit.verify_trail(name="ws")
    assert not cut.intact and cut.result is not None and cut.result.first_break is not None
    assert cut.result.first_break.kind is BreakKind.TRUNCATED

    service.destroy(name="ws", on_progress=noop)  # the trail goes with the workspace's files
    gone = audit.verify_trail(name="ws")
    assert gone.intact and gone.removed and not net.exists()
