"""Reading a log from its end, and rotating it into segments without breaking the chain:
what readers, followers and verify see across segments, and what tampering with one shows."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentbox.audit import (
    AuditLog,
    BreakKind,
    RecentRecords,
    follow_records,
    log_files,
    read_records,
    remove_log,
    tail_records,
    verify_chain,
)
from agentbox.audit.lines import Cursor, last_lines, lines_after, reverse_lines
from agentbox.audit.segments import rotate_by_rename, segment_paths
from agentbox.errors import NotFound
from agentbox.model.progress import CancelToken

from tests.unit.test_audit_chain import append_concurrently

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def stepping_clock() -> Callable[[], datetime]:
    ticks = iter(range(100_000))
    return lambda: T0 + timedelta(seconds=next(ticks))


def rotating_log(tmp_path: Path, *, count: int, rotate_bytes: int = 600) -> AuditLog:
    log = AuditLog(path=tmp_path / "audit" / "ws.jsonl", clock=stepping_clock(), rotate_bytes=rotate_bytes)
    for i in range(count):
        log.append(event="network.decision" if i % 3 else "exec", details={"i": i + 1})
    return log


def file_records(file: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in file.read_bytes().splitlines()]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- reading from the end ---------------------------------------------------------------------


def backward(path: Path, chunk: int) -> list[bytes]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return list(reverse_lines(fd, end=os.fstat(fd).st_size, chunk=chunk))[::-1]
    finally:
        os.close(fd)


@pytest.mark.parametrize("content", [
    b"", b"\n", b"a\n", b"a\nb\n", b"a\n\nb\n", b"only a partial line", b"a\nb\npartial, being written",
    b"x" * 100 + b"\n" + b"y" * 250 + b"\n" + b"z" * 7 + b"\n",
], ids=["empty", "one-empty-line", "one", "two", "blank-between", "partial-only", "partial-last", "long-lines"])
@pytest.mark.parametrize("chunk", [1, 3, 16, 1 << 16])
def test_reading_backward_gives_the_complete_lines_a_forward_read_gives(tmp_path: Path, content: bytes,
                                                                      chunk: int) -> None:
    path = tmp_path / "log"
    path.write_bytes(content)
    complete = content[:content.rfind(b"\n") + 1]
    assert backward(path, chunk) == complete.split(b"\n")[:-1]


def test_the_tail_is_the_end_of_a_full_read(tmp_path: Path) -> None:
    log = rotating_log(tmp_path, count=40)
    everything = list(read_records(path=log.path))
    assert len(log_files(log.path)) > 3  # the tail crosses segments
    for count in (1, 5, 17, 40, 100):
        assert tail_records(path=log.path, count=count) == tuple(everything[-count:])
    wanted = [r for r in everything if r.event != "network.decision"]
    assert tail_records(path=log.path, count=4, skip_events=("network.decision",)) == tuple(wanted[-4:])


def test_the_tail_skips_a_partial_last_line_and_reads_lines_longer_than_a_block(tmp_path: Path) -> None:
    log = AuditLog(path=tmp_path / "ws.jsonl", clock=stepping_clock())
    for n in range(3):
        log.append(event="egress", details={"n": n, "body": "y" * 150_000})  # > 2 read blocks each
    with log.path.open("ab") as f:
        f.write(b'{"details": {"n": 3}, "ev')  # being written (or torn)
    assert tail_records(path=log.path, count=2) == tuple(list(read_records(path=log.path))[-2:])
    assert [r.details["n"] for r in tail_records(path=log.path, count=5)] == [0, 1, 2]


def test_the_tail_of_an_empty_or_missing_log(tmp_path: Path) -> None:
    path = tmp_path / "ws.jsonl"
    with pytest.raises(NotFound):
        tail_records(path=path, count=3)
    path.write_bytes(b"")
    assert tail_records(path=path, count=3) == ()


def test_recent_records_follow_appends_and_rotations_after_one_look_back(tmp_path: Path) -> None:
    log = rotating_log(tmp_path, count=30)
    recent = RecentRecords(path=log.path, count=3, skip_events=("network.decision",))
    assert [r.details["i"] for r in recent.get()] == [22, 25, 28]
    for i in range(31, 60):  # several rotations
        log.append(event="exec" if i % 10 == 0 else "network.decision", details={"i": i})
    assert [r.details["i"] for r in recent.get()] == [28, 40, 50]
    assert recent.get() == tail_records(path=log.path, count=3, skip_events=("network.decision",))
    remove_log(log.path)  # purged, then a new life under the same name
    AuditLog(path=log.path).append(event="created")
    assert [r.event for r in recent.get()] == ["created"]


# -- rotation --------------------------------------------------------------------------------


def test_rotation_keeps_one_chain_across_segments(tmp_path: Path) -> None:
    log = rotating_log(tmp_path, count=30)
    segments = segment_paths(log.path)
    assert [s.name for s in segments] == [f"ws.jsonl.{n}" for n in range(1, len(segments) + 1)]
    assert all(s.stat().st_size < 600 + 200 for s in segments)  # each stopped at about the limit
    for older, newer in zip(log_files(log.path), log_files(log.path)[1:], strict=False):
        last, first = file_records(older)[-1], file_records(newer)[0]
        assert (first["prev"], first["seq"]) == (sha(older.read_bytes().splitlines()[-1]), last["seq"] + 1)
    records = list(read_records(path=log.path))
    assert [r.seq for r in records] == list(range(1, 31))
    result = verify_chain(path=log.path)
    assert result.intact and result.records == 30 and result.head == records[-1].digest
    assert result.files == log_files(log.path)


def test_an_append_after_a_rotation_interrupted_by_a_crash_links_no_segment_twice(tmp_path: Path) -> None:
    log = rotating_log(tmp_path, count=10)
    # The crash came after the active file was linked as the next segment, before the new file moved in.
    os.link(log.path, log.path.with_name(f"ws.jsonl.{len(segment_paths(log.path)) + 1}"))
    log.append(event="after-crash")
    assert verify_chain(path=log.path).intact
    assert [r.seq for r in read_records(path=log.path)] == list(range(1, 12))


def test_an_empty_active_file_continues_the_newest_segments_chain(tmp_path: Path) -> None:
    log = rotating_log(tmp_path, count=10)
    rotate_by_rename(path=log.path, keep=100)  # the active file moved aside, no new one yet
    log.append(event="next")
    assert verify_chain(path=log.path).intact and list(read_records(path=log.path))[-1].seq == 11


def test_concurrent_appends_that_rotate_still_form_one_chain(tmp_path: Path) -> None:
    workers, per_worker = 4, 150
    path = tmp_path / "ws.jsonl"
    append_concurrently(path, workers=workers, per_worker=per_worker, rotate_bytes=4096)
    result = verify_chain(path=path)
    assert result.intact and result.records == workers * per_worker and len(result.files) > 10
    records = list(read_records(path=path))
    for worker in range(workers):
        assert [r.details["n"] for r in records if r.details["worker"] == worker] == list(range(per_worker))


def test_follow_goes_on_through_rotations(tmp_path: Path) -> None:
    log = rotating_log(tmp_path, count=4)
    follow = follow_records(path=log.path, cancel=CancelToken(), poll_s=0)
    assert [next(follow).details["i"] for _ in range(4)] == [1, 2, 3, 4]
    for i in range(5, 25):
        log.append(event="tick", details={"i": i})
    assert [next(follow).details["i"] for _ in range(20)] == list(range(5, 25))
    follow.close()


def test_remove_log_deletes_every_segment(tmp_path: Path) -> None:
    log = rotating_log(tmp_path, count=20)
    (tmp_path / "audit" / "other.jsonl").write_text("")  # another workspace's log stays
    remove_log(log.path)
    assert sorted(p.name for p in (tmp_path / "audit").iterdir()) == ["other.jsonl"]


# -- tampering with segments -------------------------------------------------------------------


def test_a_deleted_middle_segment_breaks_the_chain_there(tmp_path: Path) -> None:
    log = rotating_log(tmp_path, count=30)
    segments = segment_paths(log.path)
    gone = segments[1]
    missing, before = len(file_records(gone)), len(file_records(segments[0]))
    gone.unlink()
    result = verify_chain(path=log.path)
    brk = result.first_break
    assert brk is not None and (brk.kind, brk.line, brk.file) == (BreakKind.DELETED, 1, segments[2])
    assert f"{missing} record(s) missing" in brk.detail and result.records == before


def test_an_edited_line_inside_a_segment_is_found_in_that_segment(tmp_path: Path) -> None:
    log = rotating_log(tmp_path, count=30)
    segment = segment_paths(log.path)[2]
    lines = segment.read_bytes().splitlines()
    lines[0] = lines[0].replace(b'"i": ', b'"i": 9')
    segment.write_bytes(b"".join(line + b"\n" for line in lines))
    brk = verify_chain(path=log.path).first_break
    assert brk is not None and (brk.kind, brk.line, brk.file) == (BreakKind.EDITED, 1, segment)


def test_an_edited_last_line_of_a_segment_is_blamed_on_it_not_on_the_next_file(tmp_path: Path) -> None:
    log = rotating_log(tmp_path, count=30)
    segment = segment_paths(log.path)[1]
    lines = segment.read_bytes().splitlines()
    lines[-1] = lines[-1].replace(b'"i": ', b'"i": 9')
    segment.write_bytes(b"".join(line + b"\n" for line in lines))
    result = verify_chain(path=log.path)
    brk = result.first_break
    assert brk is not None and (brk.kind, brk.line, brk.file) == (BreakKind.EDITED, len(lines), segment)
    assert segment.name in brk.detail
    earlier = sum(len(file_records(s)) for s in segment_paths(log.path)[:2])
    assert result.records == earlier - 1


def test_swapped_segments_do_not_verify(tmp_path: Path) -> None:
    log = rotating_log(tmp_path, count=30)
    first, second = segment_paths(log.path)[1:3]
    tmp = first.with_name("swap")
    first.rename(tmp)
    second.rename(first)
    tmp.rename(second)
    assert not verify_chain(path=log.path).intact


# -- the decision log's lines ------------------------------------------------------------------


def test_lines_after_follows_a_renamed_log_and_keeps_only_the_newest_segments(tmp_path: Path) -> None:
    path = tmp_path / "net.jsonl"
    cursor = Cursor()

    def write(*names: str) -> None:
        with path.open("ab") as f:
            f.write(b"".join(n.encode() + b"\n" for n in names))

    write("a", "b")
    assert list(lines_after(path=path, cursor=cursor)) == [b"a", b"b"]
    write("c")
    rotate_by_rename(path=path, keep=2)
    write("d")
    assert list(lines_after(path=path, cursor=cursor)) == [b"c", b"d"]
    for name in ("e", "f", "g"):
        rotate_by_rename(path=path, keep=2)
        write(name)
    assert [p.name for p in segment_paths(path)] == ["net.jsonl.3", "net.jsonl.4"]
    assert last_lines(path=path, count=3, parse=lambda line: line) == [b"e", b"f", b"g"]
