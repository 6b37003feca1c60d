"""Anchors: the log's head noted beside it, so a log cut short (or rewritten) fails verify."""

from __future__ import annotations

import hashlib
import json
import stat
from datetime import UTC, datetime
from pathlib import Path

from agentbox.audit import Anchor, AuditLog, BreakKind, read_anchors, record_anchor, verify_chain
from agentbox.audit.anchors import anchors_path

AT = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


def log_with(tmp_path: Path, count: int, *, rotate_bytes: int = 1 << 20) -> AuditLog:
    log = AuditLog(path=tmp_path / "ws.jsonl", clock=lambda: AT, rotate_bytes=rotate_bytes)
    for n in range(count):
        log.append(event="exec", details={"n": n})
    return log


def keep_lines(log: AuditLog, count: int) -> None:
    lines = log.path.read_bytes().splitlines(keepends=True)
    log.path.write_bytes(b"".join(lines[:count]))


def test_an_anchor_notes_the_last_record_and_why(tmp_path: Path) -> None:
    log = log_with(tmp_path, 3)
    anchor = record_anchor(log=log, why="stopped")
    last = log.path.read_bytes().splitlines()[-1]
    assert anchor is not None and (anchor.seq, anchor.why, anchor.ts) == (3, "stopped", AT)
    path = tmp_path / "ws.anchors.jsonl"
    assert json.loads(path.read_text()) == {"seq": 3, "hash": anchor.hash, "ts": "2024-05-01T09:30:00.000+00:00",
                                            "why": "stopped"}
    assert anchor.hash == hashlib.sha256(last).hexdigest()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_anchors(log=log.path).anchors == (anchor,)


def test_no_anchor_for_a_log_without_records(tmp_path: Path) -> None:
    log = AuditLog(path=tmp_path / "ws.jsonl")
    assert record_anchor(log=log, why="stopped") is None
    assert not log.path.exists() and not anchors_path(log.path).exists()


def test_an_intact_log_with_anchors_verifies_and_counts_them(tmp_path: Path) -> None:
    log = log_with(tmp_path, 2)
    record_anchor(log=log, why="reset")
    log.append(event="exec")
    record_anchor(log=log, why="stopped")
    result = verify_chain(path=log.path)
    assert result.intact and result.records == 3
    assert result.anchors == 2 and result.anchors_file == tmp_path / "ws.anchors.jsonl"


def test_a_log_cut_after_an_anchor_is_truncated(tmp_path: Path) -> None:
    log = log_with(tmp_path, 5)
    record_anchor(log=log, why="stopped")
    keep_lines(log, 3)
    result = verify_chain(path=log.path)
    assert not result.intact and result.first_break is not None
    assert result.first_break.kind is BreakKind.TRUNCATED and result.first_break.line == 4
    assert "the log ends at record 3 but an anchor from" in result.first_break.detail
    assert "(stopped) vouches for record 5" in result.first_break.detail
    assert result.records == 3


def test_a_log_cut_to_nothing_is_truncated_too(tmp_path: Path) -> None:
    log = log_with(tmp_path, 2)
    record_anchor(log=log, why="destroyed")
    log.path.write_bytes(b"")
    result = verify_chain(path=log.path)
    assert result.first_break is not None and result.first_break.kind is BreakKind.TRUNCATED
    assert "ends at record 0" in result.first_break.detail


def test_the_cut_is_found_across_rotated_segments(tmp_path: Path) -> None:
    log = log_with(tmp_path, 30, rotate_bytes=400)
    record_anchor(log=log, why="reset")
    segments = sorted(tmp_path.glob("ws.jsonl.*"), key=lambda p: int(p.suffix[1:]))
    assert len(segments) > 2
    log.path.unlink()
    segments[-1].rename(log.path)  # the newest segment and the active file gone: looks like a clean end
    result = verify_chain(path=log.path)
    assert result.first_break is not None and result.first_break.kind is BreakKind.TRUNCATED
    assert "vouches for record 30" in result.first_break.detail


def test_an_edit_of_the_anchored_last_record_is_caught(tmp_path: Path) -> None:
    log = log_with(tmp_path, 3)
    record_anchor(log=log, why="checkpoint before-upgrade")
    assert verify_chain(path=log.path).intact
    lines = log.path.read_text().splitlines()
    lines[2] = lines[2].replace('"n": 2', '"n": 7')  # the newest record: no later link vouches for it
    log.path.write_text("\n".join(lines) + "\n")
    result = verify_chain(path=log.path)
    assert result.first_break is not None and result.first_break.kind is BreakKind.EDITED
    assert result.first_break.line == 3 and "(checkpoint before-upgrade)" in result.first_break.detail
    assert result.records == 2


def test_a_log_cut_and_written_on_is_caught(tmp_path: Path) -> None:
    log = log_with(tmp_path, 4)
    record_anchor(log=log, why="session.ended")
    keep_lines(log, 2)
    log.append(event="exec", details={"n": "new"})
    log.append(event="exec", details={"n": "newer"})  # seq 4 again, but another record
    result = verify_chain(path=log.path)
    assert result.first_break is not None and result.first_break.kind is BreakKind.EDITED
    assert "record 4 (line 4) is not the one an anchor" in result.first_break.detail


def test_a_log_from_before_anchors_verifies_and_says_it_has_none(tmp_path: Path) -> None:
    log = log_with(tmp_path, 3)
    result = verify_chain(path=log.path)
    assert result.intact and result.anchors == 0 and result.anchors_file is None


def test_a_voucher_is_checked_without_an_anchors_file(tmp_path: Path) -> None:
    log = log_with(tmp_path, 4)
    head = log.head()
    assert head is not None and head.seq == 4
    voucher = Anchor(seq=head.seq, hash=head.hash, ts=AT, why="receipt abcd")
    assert verify_chain(path=log.path, vouchers=[voucher]).intact
    keep_lines(log, 3)
    result = verify_chain(path=log.path, vouchers=[voucher])
    assert result.anchors_file is None and result.first_break is not None
    assert result.first_break.kind is BreakKind.TRUNCATED and "(receipt abcd) vouches for record 4" in (
        result.first_break.detail)


def test_unreadable_anchor_lines_are_counted_not_trusted(tmp_path: Path) -> None:
    log = log_with(tmp_path, 2)
    record_anchor(log=log, why="stopped")
    with anchors_path(log.path).open("a") as f:
        f.write('{"seq": 9, "hash": "nothex", "ts": "2024-05-01T09:30:00+00:00", "why": "x"}\n{"seq": 1\n')
    result = verify_chain(path=log.path)
    assert result.intact and result.anchors == 1 and result.unreadable_anchors == 2


def test_the_head_skips_a_torn_last_line(tmp_path: Path) -> None:
    log = log_with(tmp_path, 2)
    before = log.head()
    with log.path.open("ab") as f:
        f.write(b'{"seq": 3, "ev')
    assert log.head() == before and before is not None and before.seq == 2
