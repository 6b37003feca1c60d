"""`agentbox receipts NAME` and `agentbox receipt NAME ID` through main(argv): receipts are
read from the data dir alone, so they work with no workspace left at all."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from agentbox.audit import AuditLog
from agentbox.cli.main import main
from agentbox.config.paths import AppPaths
from agentbox.model.audit_head import AuditHead
from agentbox.model.receipt import (
    UNTRUSTED,
    CommandRun,
    Destination,
    GuestFile,
    GuestReport,
    GuestStatus,
    OutboxChange,
    OutboxChangeKind,
    OutboxReport,
    Receipt,
)
from agentbox.stores.receipts import ReceiptStore

FIRST, SECOND = "a1b2c3d4e5f6", "0f9e8d7c6b5a"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def receipt(receipt_id: str, *, started: str, guest: GuestReport | None = None) -> Receipt:
    return Receipt(
        id=receipt_id, workspace="ws", started=started, ended=started.replace(":00+", ":30+"), duration_s=30.0,
        reason="ended by the user",
        commands=(CommandRun(at=started, argv=("make", "test"), exit_code=0, duration_s=1.25, stdout_bytes=2048,
                             stderr_bytes=0),
                  CommandRun(at=started, argv=("sh", "-c", "exit 3"), exit_code=3, duration_s=0.5, stdout_bytes=0,
                             stderr_bytes=12)),
        network=(Destination(host="web.agentbox.test", port=8080, allowed=True, connections=2, bytes_up=300,
                             bytes_down=4096),
                 Destination(host="evil.test", port=443, allowed=False, connections=1, bytes_up=0, bytes_down=0)),
        outbox=OutboxReport(compared=True, truncated=False, changes=(
            OutboxChange(path="result.txt", change=OutboxChangeKind.ADDED, kind="file", size=10),)),
        guest=guest or GuestReport(status=GuestStatus.REPORTED, detail="2 path(s)", truncated=False, files=(
            GuestFile(path="/home/agent/notes.txt", kind="file", size=5, modified=1.0),
            GuestFile(path="/home/agent/\x1b[2Jevil", kind="file", size=1, modified=1.0))))


def store(root: Path, made: Receipt) -> Path:
    """What the session service does when a session ends: the file, then its audit record."""
    path, digest = ReceiptStore(paths=AppPaths.under(root=root)).save(receipt=made)
    AuditLog(path=root / "data" / "audit" / "ws.jsonl").append(
        event="session.receipt", details={"session": made.id, "receipt": made.id, "sha256": digest})
    return path


@pytest.fixture()
def two(agentbox_root: Path) -> Path:
    store(agentbox_root, receipt(FIRST, started="2024-05-01T09:00:00+00:00"))
    return store(agentbox_root, receipt(SECOND, started="2024-05-01T10:00:00+00:00", guest=GuestReport(
        status=GuestStatus.NO_ANSWER, detail="the guest did not answer (timeout)", files=(), truncated=False)))


def test_receipts_lists_past_sessions_oldest_first(two: Path, capsys) -> None:
    code, out, err = run(["receipts", "ws"], capsys)
    assert code == 0 and err == ""
    header, first, second = out.splitlines()
    assert header.split() == ["ID", "STARTED", "DURATION", "COMMANDS", "ALLOWED", "DENIED", "INTEGRITY"]
    assert first.split()[0] == FIRST and first.split()[-4:] == ["2", "2", "1", "matches"]
    assert second.split()[0] == SECOND and "30 s" in second


def test_receipts_json_is_for_scripts(two: Path, capsys) -> None:
    code, out, _ = run(["receipts", "ws", "--json"], capsys)
    rows = json.loads(out)
    assert code == 0 and [r["id"] for r in rows] == [FIRST, SECOND]
    assert rows[0] == {"id": FIRST, "started": "2024-05-01T09:00:00+00:00", "ended": "2024-05-01T09:00:30+00:00",
                       "duration_s": 30.0, "commands": 2, "allowed": 2, "denied": 1, "integrity": "matches",
                       "problem": ""}


def test_receipt_shows_everything_the_session_did(two: Path, capsys) -> None:
    code, out, err = run(["receipt", "ws", FIRST], capsys)
    assert code == 0 and err == ""
    assert f"receipt {FIRST} of workspace ws" in out and "30 s (ended by the user)" in out
    assert "commands run through agentbox: 2" in out
    assert any(line.split()[:5] == ["3", "0.5", "0", "B", "12"] and line.endswith("sh -c 'exit 3'")
               for line in out.splitlines())
    assert "network: 2 connection(s) allowed, 1 denied" in out
    assert any(line.split()[:3] == ["allowed", "web.agentbox.test:8080", "2"] for line in out.splitlines())
    assert any(line.split()[:3] == ["denied", "evil.test:443", "1"] for line in out.splitlines())
    assert "outbox: 1 added, 0 changed, 0 removed" in out and "added    result.txt (file, 10 B)" in out
    assert f"files changed in the guest since the clean snapshot, {UNTRUSTED}: 2" in out
    assert "/home/agent/notes.txt (file, 5 B)" in out
    assert "\x1b" not in out and "/home/agent/\\x1b[2Jevil" in out  # a file name cannot drive the terminal
    assert "integrity: matches the SHA-256 in the audit log" in out


def test_receipt_says_when_the_guest_did_not_answer(two: Path, capsys) -> None:
    code, out, _ = run(["receipt", "ws", SECOND[:6]], capsys)
    assert code == 0 and f"receipt {SECOND}" in out
    assert "unknown: the guest did not answer (timeout)" in out and "/home/agent" not in out


def test_receipt_json_carries_the_receipt_and_its_integrity(two: Path, capsys) -> None:
    code, out, _ = run(["receipt", "ws", FIRST, "--json"], capsys)
    shown = json.loads(out)
    assert code == 0 and shown["integrity"] == "matches"
    assert shown["receipt"]["id"] == FIRST and shown["receipt"]["guest"]["source"] == UNTRUSTED
    assert shown["receipt"]["commands"][1]["argv"] == ["sh", "-c", "exit 3"]


def test_an_edited_receipt_is_called_out(two: Path, agentbox_root: Path, capsys) -> None:
    path = agentbox_root / "data" / "receipts" / "ws" / f"{FIRST}.json"
    path.write_text(path.read_text().replace('"exit_code": 3', '"exit_code": 0'))
    code, out, err = run(["receipt", "ws", FIRST], capsys)
    assert code == 0 and "integrity: CHANGED since it was written" in out
    assert f"warning: receipt {FIRST} was changed after it was written" in err
    assert run(["receipts", "ws"], capsys)[1].splitlines()[1].split()[-1] == "differs"


@pytest.mark.parametrize(("argv", "code", "message", "hint"), [
    (["receipt", "ws", "nope!"], 2, "error: 'nope!' is not a receipt id", "hint: agentbox receipts ws lists them"),
    (["receipt", "ws", "abcdef"], 4, "error: workspace 'ws' has no receipt 'abcdef'",
     "hint: agentbox receipts ws lists them"),
    (["receipt", "Bad_Name", FIRST], 2, "error: invalid workspace name 'Bad_Name'", "hint: for example"),
])
def test_bad_ids_and_names_get_a_clear_error_and_a_hint(two: Path, capsys, argv: list[str], code: int,
                                                        message: str, hint: str) -> None:
    got, out, err = run(argv, capsys)
    assert (got, out) == (code, "")
    assert err.splitlines()[0].startswith(message) and err.splitlines()[1].startswith(hint)


def test_a_damaged_receipt_is_listed_and_explained(two: Path, agentbox_root: Path, capsys) -> None:
    (agentbox_root / "data" / "receipts" / "ws" / f"{FIRST}.json").write_text("{not json")
    code, out, _ = run(["receipts", "ws"], capsys)
    assert code == 0 and out.splitlines()[1].split()[0] == FIRST and "is damaged" in out
    code, out, err = run(["receipt", "ws", FIRST], capsys)
    assert code == 1 and "is damaged" in err and "hint: compare it with the session.receipt record" in err


def test_no_receipts_yet(agentbox_root: Path, capsys) -> None:
    code, out, _ = run(["receipts", "ws"], capsys)
    assert code == 0 and out.startswith("no receipts for ws")
    assert run(["receipts", "ws", "--json"], capsys)[1].strip() == "[]"


def test_receipt_shows_the_audit_head_it_holds(agentbox_root: Path, capsys) -> None:
    head = AuditHead(seq=7, hash="ab" * 32)
    store(agentbox_root, replace(receipt(FIRST, started="2024-05-01T09:00:00+00:00"), audit_head=head))
    code, out, _ = run(["receipt", "ws", FIRST], capsys)
    assert code == 0 and f"audit head: record 7, hash {'ab' * 8}" in out
    assert json.loads(run(["receipt", "ws", FIRST, "--json"], capsys)[1])["receipt"]["audit_head"] == {
        "seq": 7, "hash": "ab" * 32}


def test_a_receipt_from_before_audit_heads_still_loads(agentbox_root: Path, capsys) -> None:
    path = store(agentbox_root, receipt(FIRST, started="2024-05-01T09:00:00+00:00"))
    old = json.loads(path.read_text())
    del old["audit_head"]  # as receipts were written before the field existed
    path.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
    code, out, err = run(["receipt", "ws", FIRST], capsys)
    assert code == 0 and "audit head: not recorded" in out and "is damaged" not in err
