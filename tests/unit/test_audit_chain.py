"""The audit chain: what it writes, every tampering verify catches, torn writes, concurrent
writers, and reading (since / follow)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentbox.audit import (
    GENESIS,
    TORN_TAIL_EVENT,
    AuditLog,
    BreakKind,
    follow_records,
    read_records,
    verify_chain,
)
from agentbox.errors import AgentboxError, InvalidInput, NotFound
from agentbox.model.progress import CancelToken

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def stepping_clock(step: timedelta = timedelta(minutes=1)) -> Callable[[], datetime]:
    ticks = iter(range(10_000))
    return lambda: T0 + step * next(ticks)


def make_log(tmp_path: Path, count: int = 5) -> AuditLog:
    log = AuditLog(path=tmp_path / "audit" / "ws.jsonl", clock=stepping_clock())
    for i in range(count):
        log.append(event=f"event-{i + 1}", details={"i": i + 1})
    return log


def lines(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines()


def write_lines(log: AuditLog, new: list[bytes]) -> None:
    log.path.write_bytes(b"".join(line + b"\n" for line in new))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- building the chain ------------------------------------------------------------------


def test_each_record_holds_the_hash_of_the_line_before_it(tmp_path: Path) -> None:
    log = make_log(tmp_path, count=3)
    raw = lines(log)
    records = [json.loads(line) for line in raw]
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert records[0]["prev"] == GENESIS
    assert [r["prev"] for r in records[1:]] == [sha(raw[0]), sha(raw[1])]
    assert records[0]["ts"] == "2024-05-01T12:00:00.000+00:00"
    result = verify_chain(path=log.path)
    assert result.intact and result.records == 3 and result.head == sha(raw[2])


def test_append_returns_what_readers_see(tmp_path: Path) -> None:
    log = AuditLog(path=tmp_path / "ws.jsonl", clock=stepping_clock())
    written = [log.append(event="exec", details={"argv": ["echo", "hi"], "where": tmp_path})]
    written.append(log.append(event="stopped"))
    assert list(read_records(path=log.path)) == written
    assert written[0].details == {"argv": ["echo", "hi"], "where": str(tmp_path)}  # not JSON: stored as text
    assert written[1].prev == written[0].digest


def test_an_empty_event_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        AuditLog(path=tmp_path / "ws.jsonl").append(event=" ")


def test_an_unwritable_log_is_an_agentbox_error_with_a_hint(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(AgentboxError) as caught:
        AuditLog(path=tmp_path / "file" / "ws.jsonl").append(event="started")
    assert "cannot write the audit log" in caught.value.message and caught.value.hint


def test_reading_or_verifying_a_missing_log_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        list(read_records(path=tmp_path / "none.jsonl"))
    with pytest.raises(NotFound):
        verify_chain(path=tmp_path / "none.jsonl")


# -- tampering -----------------------------------------------------------------------------


def edit_details(raw: list[bytes]) -> list[bytes]:
    record = json.loads(raw[1])
    record["details"]["i"] = 99
    return [raw[0], json.dumps(record, sort_keys=True).encode(), *raw[2:]]


def forged_linked(raw: list[bytes]) -> list[bytes]:
    # A careful forger: links to line 2 and takes seq 3; line 4 (the real seq 3) no longer fits.
    forged = json.dumps({"seq": 3, "ts": "2024-05-01T12:01:30.000+00:00", "event": "nothing-to-see",
                         "details": {}, "prev": sha(raw[1])}, sort_keys=True).encode()
    return [*raw[:2], forged, *raw[2:]]


def forged_copy(raw: list[bytes]) -> list[bytes]:
    record = json.loads(raw[1])
    record["event"] = "forged"
    return [*raw[:2], json.dumps(record, sort_keys=True).encode(), *raw[2:]]


def last_seq_edited(raw: list[bytes]) -> list[bytes]:
    record = json.loads(raw[-1])
    record["seq"] = 7
    return [*raw[:-1], json.dumps(record, sort_keys=True).encode()]


@pytest.mark.parametrize(("tamper", "kind", "line"), [
    (edit_details, BreakKind.EDITED, 2),
    (lambda raw: raw[:2] + raw[3:], BreakKind.DELETED, 3),
    (lambda raw: raw[1:], BreakKind.DELETED, 1),
    (lambda raw: [raw[0], raw[2], raw[1], *raw[3:]], BreakKind.REORDERED, 2),
    (lambda raw: [raw[1], raw[0], *raw[2:]], BreakKind.REORDERED, 1),
    (forged_linked, BreakKind.INSERTED, 3),
    (forged_copy, BreakKind.INSERTED, 3),
    (lambda raw: [*raw[:2], b'{"seq": 3, oops', *raw[3:]], BreakKind.BAD_JSON, 3),
    (lambda raw: [*raw[:2], b'{"seq": 3}', *raw[3:]], BreakKind.BAD_JSON, 3),
    (last_seq_edited, BreakKind.SEQ_GAP, 5),
], ids=["edit-field", "delete-line", "delete-first", "swap", "swap-first", "insert-forged", "insert-copy",
        "bad-json", "missing-fields", "last-seq"])
def test_tampering_is_detected_at_the_right_line(tmp_path: Path, tamper: Callable[[list[bytes]], list[bytes]],
                                                  kind: BreakKind, line: int) -> None:
    log = make_log(tmp_path)
    write_lines(log, tamper(lines(log)))
    result = verify_chain(path=log.path)
    assert not result.intact
    assert result.first_break is not None
    assert (result.first_break.kind, result.first_break.line) == (kind, line), result.first_break
    assert f"line {line}" in result.first_break.detail
    assert result.records == line - 1  # only what comes before the blamed line counts as verified


def test_truncation_inside_a_record_is_a_torn_tail(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    data = log.path.read_bytes()
    log.path.write_bytes(data[:-20])
    result = verify_chain(path=log.path)
    assert result.first_break is not None and result.first_break.kind is BreakKind.TORN_TAIL
    assert result.first_break.line == 5 and result.records == 4


def test_a_bad_line_stays_a_break_after_later_appends(tmp_path: Path) -> None:
    log = make_log(tmp_path, count=3)
    raw = lines(log)
    write_lines(log, [raw[0], b"garbage", raw[2]])
    log.append(event="later")
    result = verify_chain(path=log.path)
    assert result.first_break is not None
    assert (result.first_break.kind, result.first_break.line) == (BreakKind.BAD_JSON, 2)


# -- torn writes ---------------------------------------------------------------------------


def test_a_torn_last_line_is_reported_then_recovered_by_the_next_append(tmp_path: Path) -> None:
    log = make_log(tmp_path, count=3)
    offset = log.path.stat().st_size
    with log.path.open("ab") as f:
        f.write(b'{"details": {"i": 4}, "event": "cut sh')  # a crash mid-write

    before = verify_chain(path=log.path)
    assert before.first_break is not None and before.first_break.kind is BreakKind.TORN_TAIL
    assert before.first_break.line == 4 and f"offset {offset}" in before.first_break.detail

    log.append(event="next")
    after = verify_chain(path=log.path)
    assert after.intact and after.records == 5
    [damage] = after.recovered
    assert (damage.line, damage.offset, damage.recovered_by) == (4, offset, 5)
    records = list(read_records(path=log.path))
    assert [r.event for r in records] == ["event-1", "event-2", "event-3", TORN_TAIL_EVENT, "next"]
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert records[3].details["offset"] == offset and "interrupted" in records[3].details["reason"]
    assert lines(log)[3].startswith(b'{"details": {"i": 4}')  # the torn bytes are kept, not dropped


def test_long_records_chain_and_recover_across_read_chunks(tmp_path: Path) -> None:
    log = AuditLog(path=tmp_path / "ws.jsonl", clock=stepping_clock())
    for n in range(3):
        log.append(event="egress", details={"n": n, "body": "y" * 70_000})
    data = log.path.read_bytes()
    log.path.write_bytes(data[:-30_000])  # cut the last long record in the middle
    log.append(event="next")
    result = verify_chain(path=log.path)
    assert result.intact and result.records == 4 and [d.line for d in result.recovered] == [3]
    assert [r.seq for r in read_records(path=log.path)] == [1, 2, 3, 4]


def test_a_torn_first_write_is_recovered_too(tmp_path: Path) -> None:
    log = AuditLog(path=tmp_path / "ws.jsonl", clock=stepping_clock())
    log.path.write_bytes(b'{"det')
    log.append(event="created")
    result = verify_chain(path=log.path)
    assert result.intact and [d.line for d in result.recovered] == [1]
    assert [r.seq for r in read_records(path=log.path)] == [1, 2]


def test_an_invalid_complete_last_line_is_not_chained_onto(tmp_path: Path) -> None:
    log = make_log(tmp_path, count=2)
    with log.path.open("ab") as f:
        f.write(b"\x00\x00\x00\n")  # zero-filled blocks after a power loss
    log.append(event="next")
    result = verify_chain(path=log.path)
    assert result.intact
    assert "not a valid record" in result.recovered[0].reason
    assert [r.event for r in read_records(path=log.path)] == ["event-1", "event-2", TORN_TAIL_EVENT, "next"]


def test_recovery_cannot_be_claimed_for_another_line(tmp_path: Path) -> None:
    log = make_log(tmp_path, count=2)
    with log.path.open("ab") as f:
        f.write(b"garbage\n")
    log.append(event="next")
    raw = lines(log)
    write_lines(log, [raw[0], b"more garbage", *raw[1:]])  # the torn_tail record names line 3's offset
    result = verify_chain(path=log.path)
    assert result.first_break is not None and result.first_break.line == 2


# -- concurrent writers ----------------------------------------------------------------------


def _append_many(path: str, worker: int, count: int, barrier: multiprocessing.synchronize.Barrier,
                 rotate_bytes: int | None) -> None:
    log = AuditLog(path=Path(path)) if rotate_bytes is None else AuditLog(path=Path(path), rotate_bytes=rotate_bytes)
    barrier.wait()
    for n in range(count):
        log.append(event="tick", details={"worker": worker, "n": n, "pad": "x" * (worker * 300)})


def append_concurrently(path: Path, *, workers: int, per_worker: int, rotate_bytes: int | None = None) -> None:
    """`workers` processes append `per_worker` records each to one log, all at once."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers)
    procs = [ctx.Process(target=_append_many, args=(str(path), w, per_worker, barrier, rotate_bytes))
             for w in range(workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    assert [proc.exitcode for proc in procs] == [0] * workers


def test_concurrent_appends_from_several_processes_form_one_chain(tmp_path: Path) -> None:
    workers, per_worker = 4, 200
    path = tmp_path / "ws.jsonl"
    append_concurrently(path, workers=workers, per_worker=per_worker)

    result = verify_chain(path=path)
    assert result.intact and result.records == workers * per_worker and result.recovered == ()
    records = list(read_records(path=path))
    assert [r.seq for r in records] == list(range(1, workers * per_worker + 1))
    for worker in range(workers):
        assert [r.details["n"] for r in records if r.details["worker"] == worker] == list(range(per_worker))


# -- reading -----------------------------------------------------------------------------------


def test_since_keeps_records_at_or_after_the_time(tmp_path: Path) -> None:
    log = AuditLog(path=tmp_path / "ws.jsonl", clock=stepping_clock(timedelta(hours=1)))
    for event in ("a", "b", "c"):
        log.append(event=event)
    assert [r.event for r in read_records(path=log.path, since=T0 + timedelta(hours=1))] == ["b", "c"]
    assert [r.event for r in read_records(path=log.path, since=datetime(2024, 5, 1, 14, 0))] == ["c"]  # naive: UTC
    assert [r.event for r in read_records(path=log.path, since=T0 + timedelta(days=1))] == []


def test_follow_yields_existing_then_appended_records(tmp_path: Path) -> None:
    log = make_log(tmp_path, count=2)
    follow = follow_records(path=log.path, cancel=CancelToken(), poll_s=0)
    assert [next(follow).event, next(follow).event] == ["event-1", "event-2"]
    log.append(event="later")
    assert next(follow).event == "later"
    with log.path.open("ab") as f:
        f.write(b'{"torn')
    log.append(event="after-crash")
    assert [next(follow).event, next(follow).event] == [TORN_TAIL_EVENT, "after-crash"]
    follow.close()


def test_follow_waits_for_the_log_and_ends_on_stop(tmp_path: Path) -> None:
    log = AuditLog(path=tmp_path / "later" / "ws.jsonl", clock=stepping_clock())
    polls: list[int] = []

    def stop() -> bool:
        if not polls:
            log.append(event="created")  # appears only after the first poll found nothing
        polls.append(1)
        return len(polls) >= 3

    assert [r.event for r in follow_records(path=log.path, cancel=CancelToken(), poll_s=0, stop=stop)] == ["created"]


def test_follow_ends_when_cancelled_and_honours_since(tmp_path: Path) -> None:
    log = make_log(tmp_path, count=3)
    token = CancelToken()
    token.cancel()
    followed = follow_records(path=log.path, cancel=token, since=T0 + timedelta(minutes=1), poll_s=10)
    assert [r.event for r in followed] == ["event-2", "event-3"]


# -- layering ----------------------------------------------------------------------------------


def test_the_audit_package_loads_only_the_stdlib_errors_and_model() -> None:
    probe = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import agentbox.audit\n"
        "ok = ('agentbox', 'agentbox.errors', 'agentbox.model', 'agentbox.audit')\n"
        "bad = [m for m in set(sys.modules) - before if m.split('.')[0] not in sys.stdlib_module_names\n"
        "       and not any(m == p or m.startswith(p + '.') for p in ok)]\n"
        "print(','.join(sorted(bad)))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
