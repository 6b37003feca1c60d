"""Session recordings on the Fake backend: `exec` output kept as asciicast, secrets redacted
before they reach the disk, each recording vouched for by the audit log, listed in the
session's receipt, kept after destroy and removed by --purge."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from agentbox.audit import read_records
from agentbox.model.progress import CancelToken
from agentbox.model.recording import RecordingIntegrity, RecordingKind, parse_cast
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.services.receipts import ReceiptService
from agentbox.services.session_recording import recording
from agentbox.services.workspaces import WorkspaceService
from agentbox.stores.recordings import CastWriter, RecordingStore

from .conftest import World

KEY = "sk-ant-api03-abcdefghijklmnop1234"


def make(world: World, name: str = "ws") -> None:
    create_workspace(ctx=world.ctx, request=CreateRequest(name=name), on_progress=world.progress.append,
                     cancel=CancelToken())


def guest_prints(world: World, *chunks: bytes, code: int = 0) -> None:
    def reply(argv: Sequence[str], stdout: Callable[[bytes], None]) -> int | None:
        if argv[:1] != ["show"]:
            return None
        for chunk in chunks:
            stdout(chunk)
        return code
    world.guest.reply = reply


def exec_show(world: World, name: str = "ws") -> int:
    return WorkspaceService(ctx=world.ctx).exec(name=name, argv=["show", "things"], stdout=lambda _: None,
                                                stderr=lambda _: None).exit_code


def only_recording(world: World, name: str = "ws"):  # type: ignore[no-untyped-def]
    (summary,) = RecordingStore(paths=world.ctx.paths).list(name=name)
    return summary


def test_exec_output_is_recorded_and_vouched_for_by_the_audit_log(world: World) -> None:
    make(world)
    guest_prints(world, b"line one\n", b"line two\n", code=3)
    assert exec_show(world) == 3
    summary = only_recording(world)
    assert summary.kind is RecordingKind.EXEC and summary.argv == ("show", "things")
    assert summary.integrity is RecordingIntegrity.MATCHES
    stored = RecordingStore(paths=world.ctx.paths).get(name="ws", recording_id=summary.id[:6])
    assert stored.cast.output == "line one\nline two\n"
    exec_record = [r for r in read_records(path=world.ctx.paths.audit_log("ws")) if r.event == "exec"][-1]
    assert exec_record.details["recording"] == summary.id
    saved = [r for r in read_records(path=world.ctx.paths.audit_log("ws")) if r.event == "recording.saved"][-1]
    assert saved.details["exit_code"] == 3
    path = world.ctx.paths.workspace_recordings("ws") / f"{summary.id}.cast"
    assert saved.details["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_key_the_guest_prints_is_redacted_before_it_is_written_even_when_split(world: World) -> None:
    make(world)
    guest_prints(world, f"export ANTHROPIC_API_KEY={KEY[:12]}".encode(), f"{KEY[12:]}\nbye\n".encode())
    exec_show(world)
    path = world.ctx.paths.workspace_recordings("ws") / f"{only_recording(world).id}.cast"
    data = path.read_text()
    assert KEY not in data and KEY[12:] not in data
    assert "[redacted]" in parse_cast(path.read_bytes()).output
    saved = [r for r in read_records(path=world.ctx.paths.audit_log("ws")) if r.event == "recording.saved"][-1]
    assert saved.details["redacted"] == 1


def test_an_edited_deleted_planted_or_unfinished_recording_is_not_vouched_for(world: World) -> None:
    make(world)
    store = RecordingStore(paths=world.ctx.paths)
    guest_prints(world, b"fine\n")
    exec_show(world)
    edited = only_recording(world)
    edited_path = world.ctx.paths.workspace_recordings("ws") / f"{edited.id}.cast"
    edited_path.write_text(edited_path.read_text().replace("fine", "FINE"))
    exec_show(world)
    deleted = [s for s in store.list(name="ws") if s.id != edited.id][0]
    (world.ctx.paths.workspace_recordings("ws") / f"{deleted.id}.cast").unlink()
    planted = CastWriter(path=world.ctx.paths.workspace_recordings("ws") / "abcdef012345.cast", width=80,
                         height=24, title="planted")
    planted.close()
    unfinished = recording(ctx=world.ctx, name="ws", kind=RecordingKind.SHELL, argv=["(shell)"])
    active = unfinished.__enter__()  # agentbox killed during the session: never saved
    active.output(b"half a session")
    states = {s.id: s.integrity for s in store.list(name="ws")}
    assert states == {edited.id: RecordingIntegrity.DIFFERS, deleted.id: RecordingIntegrity.MISSING,
                      "abcdef012345": RecordingIntegrity.UNRECORDED, active.id: RecordingIntegrity.INCOMPLETE}


def test_the_session_receipt_lists_its_recordings(world: World) -> None:
    make(world)
    world.ctx.audit(name="ws").append(event="session.started", details={"session": "5e55"})
    guest_prints(world, b"hello\n")
    exec_show(world)
    record = world.ctx.records.load(name="ws")
    receipt = ReceiptService(ctx=world.ctx).finish(record=record, session_id="5e55",
                                                   started=world.ctx.clock().isoformat(),
                                                   ended=datetime.now().astimezone(), reason="test")
    (ref,) = receipt.recordings
    summary = only_recording(world)
    assert (ref.id, ref.kind, ref.argv, ref.sha256) == (summary.id, "exec", ("show", "things"), summary.sha256)


def test_no_recording_when_record_sessions_is_off(world: World) -> None:
    make(world)
    ctx = replace(world.ctx, settings=replace(world.ctx.settings, record_sessions=False))
    guest_prints(world, b"hello\n")
    WorkspaceService(ctx=ctx).exec(name="ws", argv=["show"], stdout=lambda _: None, stderr=lambda _: None)
    assert RecordingStore(paths=ctx.paths).list(name="ws") == ()


def test_recordings_outlive_destroy_and_go_with_purge(world: World) -> None:
    make(world)
    guest_prints(world, b"hello\n")
    exec_show(world)
    workspaces = WorkspaceService(ctx=world.ctx)
    workspaces.destroy(name="ws", on_progress=lambda _: None)
    assert only_recording(world).integrity is RecordingIntegrity.MATCHES
    make(world)
    workspaces.destroy(name="ws", on_progress=lambda _: None, purge=True)
    assert RecordingStore(paths=world.ctx.paths).list(name="ws") == ()
    assert not (world.ctx.paths.evidence_dir / "ws").exists()
