"""Session receipts on the Fake backend: what a session did, written before the reset, kept
after reset and destroy, and honest about what the guest did not tell."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from agentbox.audit import BreakKind, read_anchors, read_records, verify_chain
from agentbox.audit.anchors import anchors_path
from agentbox.backends.base import DomainState
from agentbox.egress.policy import Decision
from agentbox.egress.records import ConnectionRecord, Outcome
from agentbox.egress.wire import record_to_json
from agentbox.errors import GuestError, InvalidInput, NotFound
from agentbox.model.progress import CancelToken
from agentbox.model.receipt import UNTRUSTED, GuestStatus, Integrity, OutboxChangeKind, Receipt
from agentbox.provision.guest_changes import CHANGES_ARGV, CHANGES_LIMIT
from agentbox.services.audit import AuditService
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.services.outbox import OutboxService
from agentbox.stores.receipts import ReceiptStore
from agentbox.services.sessions import SessionEnd, SessionService
from agentbox.services.snapshots import SnapshotService
from agentbox.services.workspaces import WorkspaceService

from .conftest import World

GUEST_FILES = b"f 12 1700000000.5 /home/agent/notes.txt\0d 4096 1700000000.1 /home/agent\0"


def sessions(world: World) -> SessionService:
    return SessionService(ctx=world.ctx, workspaces=WorkspaceService(ctx=world.ctx),
                          snapshots=SnapshotService(ctx=world.ctx))


def make(world: World, name: str = "ws") -> None:
    create_workspace(ctx=world.ctx, request=CreateRequest(name=name), on_progress=world.progress.append,
                     cancel=CancelToken())


def guest_answers(world: World, answer: Callable[[Callable[[bytes], None]], int]) -> None:
    """Let the scripted guest answer the receipt's file listing (and only that) with `answer`."""
    def reply(argv: Sequence[str], stdout: Callable[[bytes], None]) -> int | None:
        return answer(stdout) if tuple(argv) == CHANGES_ARGV else None
    world.guest.reply = reply


def listing(output: bytes, code: int = 0) -> Callable[[Callable[[bytes], None]], int]:
    def answer(stdout: Callable[[bytes], None]) -> int:
        stdout(output)
        return code
    return answer


def decision(world: World, *, host: str, port: int, allowed: bool, up: int, down: int) -> None:
    """What the egress proxy daemon appends for each connection it closes."""
    record = ConnectionRecord(
        time="2024-05-01T09:30:00Z", host=host, address="127.0.0.1", port=port, method="CONNECT",
        decision=Decision(allowed, "web.test:443" if allowed else "not-listed", "listed" if allowed else "not listed"),
        outcome=Outcome.COMPLETED if allowed else Outcome.DENIED, bytes_up=up, bytes_down=down, duration_s=0.5)
    world.ctx.audit(name="ws").append(event="network.decision", details=record_to_json(record))


def run(world: World, *argv: str) -> None:
    WorkspaceService(ctx=world.ctx).exec(name="ws", argv=list(argv), stdout=lambda _: None, stderr=lambda _: None)


def end(world: World, service: SessionService | None = None) -> SessionEnd:
    ended = (service or sessions(world)).end(name="ws", reason="ended by the user",
                                             on_progress=world.progress.append, cancel=CancelToken())
    assert ended is not None
    return ended


def start(world: World, service: SessionService | None = None) -> str:
    return (service or sessions(world)).start(name="ws", max_minutes=None, on_progress=world.progress.append,
                                              cancel=CancelToken()).id


def outbox(world: World) -> Path:
    directory = OutboxService(ctx=world.ctx).directory(name="ws")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def events(world: World) -> list[str]:
    return [r.event for r in read_records(path=world.ctx.paths.audit_log("ws"))]


def test_a_receipt_lists_the_sessions_commands_network_outbox_and_guest_files(world: World) -> None:
    make(world)
    box = outbox(world)
    (box / "kept.txt").write_text("v1")
    (box / "stale.txt").write_text("old")
    (box / "same.txt").write_text("unchanged")
    run(world, "echo", "before the session")  # not this session's
    decision(world, host="before.test", port=443, allowed=True, up=1, down=1)
    guest_answers(world, listing(GUEST_FILES))

    session_id = start(world)
    run(world, "make", "test")
    world.guest.exit_code = 2
    run(world, "sh", "-c", "exit 2")
    decision(world, host="web.test", port=443, allowed=True, up=100, down=2000)
    decision(world, host="web.test", port=443, allowed=True, up=50, down=1000)
    decision(world, host="evil.test", port=80, allowed=False, up=0, down=0)
    (box / "result.txt").write_text("the answer")  # as the guest would, through the share
    (box / "kept.txt").write_text("version 2")
    (box / "stale.txt").unlink()
    ended = end(world)

    receipt = ended.receipt
    assert receipt is not None and receipt.id == session_id and receipt.workspace == "ws"
    assert receipt.duration_s == ended.duration_s and receipt.reason == "ended by the user"
    assert [(c.argv, c.exit_code, c.stdout_bytes, c.stderr_bytes) for c in receipt.commands] == [
        (("make", "test"), 0, len(b"ran\n"), 0), (("sh", "-c", "exit 2"), 2, len(b"ran\n"), 0)]
    assert [(d.host, d.port, d.allowed, d.connections, d.bytes_up, d.bytes_down) for d in receipt.network] == [
        ("web.test", 443, True, 2, 150, 3000), ("evil.test", 80, False, 1, 0, 0)]
    assert receipt.outbox.compared and not receipt.outbox.truncated
    assert [(c.path, c.change) for c in receipt.outbox.changes] == [
        ("kept.txt", OutboxChangeKind.CHANGED), ("result.txt", OutboxChangeKind.ADDED),
        ("stale.txt", OutboxChangeKind.REMOVED)]
    assert receipt.guest.status is GuestStatus.REPORTED and receipt.guest.source == UNTRUSTED
    assert [(f.path, f.kind, f.size) for f in receipt.guest.files] == [
        ("/home/agent", "dir", 4096), ("/home/agent/notes.txt", "file", 12)]
    assert not receipt.guest.truncated
    # Written before the reset, and vouched for by the audit log.
    assert events(world)[-3:] == ["session.receipt", "reset", "session.ended"]
    stored = ReceiptStore(paths=world.ctx.paths).get(name="ws", receipt_id=session_id)
    assert stored.receipt == receipt and stored.integrity is Integrity.MATCHES
    assert stored.path == world.ctx.paths.data_dir / "receipts" / "ws" / f"{session_id}.json"
    [audit] = [r for r in read_records(path=world.ctx.paths.audit_log("ws")) if r.event == "session.receipt"]
    assert audit.details["receipt"] == session_id
    assert audit.details["sha256"] == hashlib.sha256(stored.path.read_bytes()).hexdigest()
    assert verify_chain(path=world.ctx.paths.audit_log("ws")).intact


def test_a_guest_that_does_not_answer_gets_a_receipt_that_says_so_and_is_reset_all_the_same(world: World) -> None:
    make(world)

    def silent(_: Callable[[bytes], None]) -> int:
        raise GuestError("the guest did not answer SSH within 10 s")

    guest_answers(world, silent)
    start(world)
    run(world, "true")
    ended = end(world)
    assert ended.receipt is not None and ended.reset is not None
    guest = ended.receipt.guest
    assert guest.status is GuestStatus.NO_ANSWER and guest.files == ()
    assert "did not answer" in guest.detail
    assert [c.argv for c in ended.receipt.commands] == [("true",)]  # the host's own records still count
    assert events(world)[-3:] == ["session.receipt", "reset", "session.ended"]


@pytest.mark.parametrize(("answer", "status", "count", "truncated"), [
    (listing(b"", code=3), GuestStatus.NO_MARKER, 0, False),
    (listing(b"", code=1), GuestStatus.FAILED, 0, False),
    (listing(b"".join(b"f 1 1700000000.0 /tmp/f%d\0" % i for i in range(CHANGES_LIMIT + 1))),
     GuestStatus.REPORTED, CHANGES_LIMIT, True),
    (listing(b"f 1 1700000000.0 /a\0garbage\0f 1 1700000000.0 /b\0f 1 170"), GuestStatus.REPORTED, 2, False),
])
def test_what_the_guest_says_is_reported_as_far_as_it_goes(
        world: World, answer: Callable[[Callable[[bytes], None]], int], status: GuestStatus, count: int,
        truncated: bool) -> None:
    make(world)
    guest_answers(world, answer)
    start(world)
    receipt = end(world).receipt
    assert receipt is not None
    assert (receipt.guest.status, len(receipt.guest.files), receipt.guest.truncated) == (status, count, truncated)
    assert receipt.guest.detail


def test_a_guest_that_floods_the_host_is_cut_off(world: World) -> None:
    make(world)

    def flood(stdout: Callable[[bytes], None]) -> int:
        for _ in range(100):  # 10 MiB of one endless path
            stdout(b"f 1 1700000000.0 /" + b"x" * (100 << 10))
        return 0

    guest_answers(world, flood)
    start(world)
    receipt = end(world).receipt
    assert receipt is not None
    assert receipt.guest.status is GuestStatus.REPORTED and receipt.guest.files == () and receipt.guest.truncated


def test_a_workspace_that_is_not_running_at_the_end_is_not_asked(world: World) -> None:
    make(world)
    start(world)
    world.backend.set_state("agentbox-ws", DomainState.STOPPED)
    asked = len(world.guest.commands)
    receipt = end(world).receipt
    assert receipt is not None and receipt.guest.status is GuestStatus.NOT_RUNNING
    assert list(CHANGES_ARGV) not in world.guest.commands[asked:]


def test_a_receipt_that_cannot_be_stored_does_not_stop_the_reset(world: World) -> None:
    make(world)
    start(world)
    world.ctx.paths.receipts_dir.parent.mkdir(parents=True, exist_ok=True)
    world.ctx.paths.receipts_dir.write_text("in the way")  # a file where the folder should be
    ended = end(world)
    assert ended.receipt is None and "cannot write the session receipt" in ended.receipt_error
    assert ended.reset is not None and sessions(world).current(name="ws") is None


def test_receipts_are_listed_and_outlive_reset_and_destroy_but_not_purge(world: World) -> None:
    make(world)
    service = sessions(world)
    first = start(world, service)
    run(world, "true")
    end(world, service)
    second = start(world, service)
    decision(world, host="evil.test", port=80, allowed=False, up=0, down=0)
    end(world, service)
    WorkspaceService(ctx=world.ctx).destroy(name="ws", on_progress=world.progress.append)

    store = ReceiptStore(paths=world.ctx.paths)
    summaries = store.list(name="ws")
    assert [(s.id, s.commands, s.allowed, s.denied, s.integrity) for s in summaries] == [
        (first, 1, 0, 0, Integrity.MATCHES), (second, 0, 0, 1, Integrity.MATCHES)]
    assert store.get(name="ws", receipt_id=second[:6]).receipt.id == second  # a unique start will do

    make(world)
    WorkspaceService(ctx=world.ctx).destroy(name="ws", on_progress=world.progress.append, purge=True)
    assert store.list(name="ws") == ()


def test_without_a_start_listing_everything_in_the_outbox_is_listed_as_added(world: World) -> None:
    make(world)
    start(world)
    (world.ctx.paths.workspace_dir("ws") / "session-outbox.json").unlink()  # an older agentbox started it
    (outbox(world) / "result.txt").write_text("x")
    receipt = end(world).receipt
    assert receipt is not None and not receipt.outbox.compared
    assert [(c.path, c.change) for c in receipt.outbox.changes] == [("result.txt", OutboxChangeKind.ADDED)]


def test_a_run_leaves_a_receipt_even_for_a_throw_away_workspace(world: World) -> None:
    outcome = sessions(world).run(argv=["make", "test"], name=None, template=None, max_minutes=None,
                                  stdout=lambda _: None, stderr=lambda _: None, on_progress=world.progress.append,
                                  cancel=CancelToken())
    receipt = outcome.end.receipt
    assert receipt is not None and [c.argv for c in receipt.commands] == [("make", "test")]
    [kept] = ReceiptStore(paths=world.ctx.paths).list(name=outcome.workspace)
    assert kept.id == receipt.id and kept.commands == 1


def test_the_supervisors_time_limit_writes_the_receipt_too(world: World) -> None:
    make(world)
    session = sessions(world).start(name="ws", max_minutes=1, on_progress=world.progress.append,
                                    cancel=CancelToken())
    later = world.ctx.clock() + timedelta(minutes=1, seconds=1)
    timed = SessionService(ctx=replace(world.ctx, clock=lambda: later), workspaces=WorkspaceService(ctx=world.ctx),
                           snapshots=SnapshotService(ctx=world.ctx))
    timed.expire("ws", session.id)
    [kept] = ReceiptStore(paths=world.ctx.paths).list(name="ws")
    assert kept.id == session.id and kept.duration_s >= 60


def test_bad_and_unknown_ids_are_refused_with_a_hint(world: World) -> None:
    store = ReceiptStore(paths=world.ctx.paths)
    with pytest.raises(InvalidInput, match="not a receipt id") as bad:
        store.get(name="ws", receipt_id="../../etc/passwd")
    assert bad.value.hint == "agentbox receipts ws lists them"
    with pytest.raises(NotFound, match="has no receipt 'abcdef'"):
        store.get(name="ws", receipt_id="abcdef")


def test_a_stored_receipt_reads_back_exactly(world: World) -> None:
    make(world)
    guest_answers(world, listing(GUEST_FILES))
    start(world)
    decision(world, host="web.test", port=443, allowed=True, up=1, down=2)
    receipt = end(world).receipt
    assert isinstance(receipt, Receipt)
    path = world.ctx.paths.workspace_receipts("ws") / f"{receipt.id}.json"
    assert json.loads(path.read_text())["guest"]["source"] == UNTRUSTED
    assert ReceiptStore(paths=world.ctx.paths).get(name="ws", receipt_id=receipt.id).receipt == receipt


SECRET = "sk-ant-api03-Zx9yW8vU7tS6rQ5pO4nM3"


def test_a_key_on_a_command_line_reaches_neither_the_audit_log_nor_the_receipt(world: World) -> None:
    make(world)
    session_id = start(world)
    run(world, "claude", "--api-key", SECRET, "-p", "hello")
    run(world, "sh", "-c", f"export ANTHROPIC_API_KEY={SECRET}; make")
    end(world)

    log = world.ctx.paths.audit_log("ws")
    stored = ReceiptStore(paths=world.ctx.paths).get(name="ws", receipt_id=session_id)
    assert SECRET not in log.read_text() and SECRET not in stored.path.read_text()
    assert world.guest.commands.count(["claude", "--api-key", SECRET, "-p", "hello"]) == 1  # the guest got the key
    execs = [r.details for r in read_records(path=log) if r.event == "exec"]
    assert [(d["argv"], d["redacted"]) for d in execs] == [
        (["claude", "--api-key", "[redacted]", "-p", "hello"], 1),
        (["sh", "-c", "export ANTHROPIC_API_KEY=[redacted]; make"], 1)]
    assert [(c.argv[-1], c.redacted) for c in stored.receipt.commands] == [
        ("hello", 1), ("export ANTHROPIC_API_KEY=[redacted]; make", 1)]
    assert verify_chain(path=log).intact


def test_a_key_in_an_older_log_is_still_kept_out_of_the_receipt(world: World) -> None:
    make(world)
    session_id = start(world)
    # As exec recorded commands before it redacted them.
    world.ctx.audit(name="ws").append(event="exec", details={
        "argv": ["env", f"TOKEN={SECRET}", "make"], "exit_code": 0, "duration_s": 0.1,
        "stdout_bytes": 0, "stderr_bytes": 0})
    end(world)
    stored = ReceiptStore(paths=world.ctx.paths).get(name="ws", receipt_id=session_id)
    assert SECRET not in stored.path.read_text()
    assert [(c.argv, c.redacted) for c in stored.receipt.commands] == [(("env", "TOKEN=[redacted]", "make"), 1)]


def test_a_run_records_its_command_without_the_key(world: World) -> None:
    outcome = sessions(world).run(argv=["curl", "-H", f"x-api-key: {SECRET}", "https://api.test"], name=None,
                                  template=None, max_minutes=None, stdout=lambda _: None, stderr=lambda _: None,
                                  on_progress=world.progress.append, cancel=CancelToken())
    receipt = outcome.end.receipt
    assert receipt is not None and receipt.commands[0].argv == ("curl", "-H", "x-api-key: [redacted]",
                                                                "https://api.test")
    [kept] = ReceiptStore(paths=world.ctx.paths).list(name=outcome.workspace)
    receipt_file = world.ctx.paths.data_dir / "receipts" / outcome.workspace / f"{kept.id}.json"
    assert SECRET not in receipt_file.read_text()
    assert SECRET not in world.ctx.paths.audit_log(outcome.workspace).read_text()


def test_a_receipt_holds_the_audit_head_and_verify_holds_the_log_to_it(world: World) -> None:
    make(world)
    session_id = start(world)
    run(world, "make", "test")
    receipt = end(world).receipt
    assert receipt is not None and receipt.audit_head is not None
    log = world.ctx.paths.audit_log("ws")
    records = list(read_records(path=log))
    [written] = [r for r in records if r.event == "session.receipt"]
    before = records[written.seq - 2]
    assert (receipt.audit_head.seq, receipt.audit_head.hash) == (before.seq, before.digest)
    assert ReceiptStore(paths=world.ctx.paths).get(name="ws", receipt_id=session_id).receipt == receipt
    assert [a.why for a in read_anchors(log=log).anchors][-3:] == [f"receipt {session_id}", "reset", "session.ended"]
    audit = AuditService(paths=world.ctx.paths)
    assert audit.verify(name="ws").intact

    # Cut the log before the receipt's head, and take the anchors file away too: the receipt still tells.
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:receipt.audit_head.seq - 1]))
    anchors_path(log).unlink()
    result = audit.verify(name="ws")
    assert result.anchors_file is None and result.first_break is not None
    assert result.first_break.kind is BreakKind.TRUNCATED
    assert f"(receipt {session_id}) vouches for record {receipt.audit_head.seq}" in result.first_break.detail
