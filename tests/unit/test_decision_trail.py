"""The decision trail (`net.jsonl`): the audit chain's appender, kept bounded, its head noted
in the audit log; what `verify_trail` finds when a decision is edited, deleted, moved or cut."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from agentbox.audit import (
    DECISION_EVENT,
    GENESIS,
    HEAD_EVENT,
    TRAIL_SEGMENTS,
    AuditLog,
    BreakKind,
    decision_trail,
    set_aside_unchained,
    verify_trail,
)
from agentbox.audit.segments import log_files, segment_paths

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def write(path: Path, count: int, *, rotate_bytes: int = 8 << 20) -> AuditLog:
    trail = decision_trail(path=path, rotate_bytes=rotate_bytes, clock=lambda: WHEN)
    for n in range(count):
        trail.append(event=DECISION_EVENT, details={"host": f"h{n}.example", "allowed": False})
    return trail


def audit_with_head(trail: AuditLog) -> list[tuple[str, dict[str, object], datetime]]:
    """The audit log's records as services leave them: a head noted after some decisions."""
    head = trail.synced_head()
    assert head is not None
    return [("create.started", {}, WHEN), (HEAD_EVENT, {"seq": head.seq, "hash": head.hash, "why": "stopped"}, WHEN)]


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_each_decision_is_a_chained_record(tmp_path: Path) -> None:
    path = tmp_path / "net.jsonl"
    write(path, 3)
    records = [json.loads(line) for line in lines(path)]
    assert [r["seq"] for r in records] == [1, 2, 3] and records[0]["prev"] == GENESIS
    assert [r["details"]["host"] for r in records] == ["h0.example", "h1.example", "h2.example"]
    verdict = verify_trail(path=path, audit_records=audit_with_head(decision_trail(path=path)))
    assert verdict.intact and verdict.result is not None and verdict.result.records == 3 and verdict.heads == 1


def test_rotation_keeps_the_trail_bounded_and_its_chain_verifies_from_the_oldest_kept(tmp_path: Path) -> None:
    path = tmp_path / "net.jsonl"
    trail = write(path, 60, rotate_bytes=600)
    assert len(segment_paths(path)) == TRAIL_SEGMENTS
    assert sum(f.stat().st_size for f in log_files(path)) < 600 * (TRAIL_SEGMENTS + 2)
    verdict = verify_trail(path=path, audit_records=audit_with_head(trail))
    assert verdict.intact and verdict.result is not None
    assert verdict.result.first_seq > 1 and verdict.result.first_seq + verdict.result.records - 1 == 60


def test_deleting_the_oldest_kept_segment_is_not_taken_for_rotation(tmp_path: Path) -> None:
    path = tmp_path / "net.jsonl"
    trail = write(path, 60, rotate_bytes=600)
    audit = audit_with_head(trail)
    segment_paths(path)[0].unlink()
    verdict = verify_trail(path=path, audit_records=audit)
    assert not verdict.intact and verdict.result is not None and verdict.result.first_break is not None
    assert verdict.result.first_break.kind is BreakKind.DELETED
    assert "rotation drops old records only while 4 remain" in verdict.result.first_break.detail


def test_an_edited_deleted_or_moved_decision_breaks_the_trail_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "net.jsonl"
    audit = audit_with_head(write(path, 5))
    original = lines(path)
    edited = original[:]
    edited[1] = edited[1].replace(b'"allowed": false', b'"allowed": true')
    deleted = original[:2] + original[3:]
    moved = [original[0], original[2], original[1], *original[3:]]
    for content, line, kind in ((edited, 2, BreakKind.EDITED), (deleted, 3, BreakKind.DELETED),
                                (moved, 2, BreakKind.REORDERED)):
        path.write_bytes(b"".join(content))
        result = verify_trail(path=path, audit_records=audit).result
        assert result is not None and result.first_break is not None
        assert (result.first_break.kind, result.first_break.line, result.first_break.file) == (kind, line, path)


def test_decisions_cut_off_the_end_show_against_the_head_the_audit_log_noted(tmp_path: Path) -> None:
    path = tmp_path / "net.jsonl"
    audit = audit_with_head(write(path, 5))
    path.write_bytes(b"".join(lines(path)[:3]))  # the chain alone still holds
    verdict = verify_trail(path=path, audit_records=audit)
    assert not verdict.intact and verdict.result is not None and verdict.result.first_break is not None
    assert verdict.result.first_break.kind is BreakKind.TRUNCATED
    path.unlink()
    verdict = verify_trail(path=path, audit_records=audit)
    assert not verdict.intact and verdict.result is None and verdict.heads == 1


def test_only_this_life_of_the_workspace_counts_and_destroy_takes_the_trail(tmp_path: Path) -> None:
    path = tmp_path / "net.jsonl"
    earlier = audit_with_head(write(path, 5))
    path.unlink()
    trail = write(path, 2)  # the name made again: a new trail, from genesis
    assert verify_trail(path=path, audit_records=[*earlier, *audit_with_head(trail)]).intact
    gone = [*earlier, *audit_with_head(trail), ("destroyed", {}, WHEN)]
    path.unlink()
    verdict = verify_trail(path=path, audit_records=gone)
    assert verdict.intact and verdict.removed


def test_unchained_lines_are_set_aside_once_and_counted_not_verified(tmp_path: Path) -> None:
    path = tmp_path / "net.jsonl"
    old = b"".join(json.dumps({"host": f"o{n}.example", "allowed": True}).encode() + b"\n" for n in range(3))
    path.write_bytes(old)
    assert set_aside_unchained(path) == 1 and not path.exists()
    write(path, 2)
    assert set_aside_unchained(path) == 0  # a chained trail stays where it is
    verdict = verify_trail(path=path, audit_records=audit_with_head(decision_trail(path=path)))
    assert verdict.intact and verdict.unchained == 3
    assert (tmp_path / "net.unchained.jsonl.1").read_bytes() == old


def test_a_gateway_appends_its_own_events_to_the_same_chain(tmp_path: Path) -> None:
    path = tmp_path / "net.jsonl"
    trail = write(path, 2)
    trail.append(event="gateway.credential", details={"provider": "example", "allowed": True})
    write(path, 1)
    verdict = verify_trail(path=path, audit_records=audit_with_head(trail))
    assert verdict.intact and verdict.result is not None and verdict.result.records == 4
