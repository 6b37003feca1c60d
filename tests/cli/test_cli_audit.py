"""`agentbox audit` and `destroy --purge` through main(argv), on the libvirt test driver."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentbox.audit import AuditLog, record_anchor
from agentbox.cli.main import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def log_of(root: Path, name: str, *, at: datetime | None = None) -> AuditLog:
    """The log where agentbox keeps it: outside the workspace dir, so it survives destroy."""
    return AuditLog(path=root / "data" / "audit" / f"{name}.jsonl", clock=lambda: at or datetime.now(UTC))


def three_records(root: Path) -> AuditLog:
    log = log_of(root, "ws")
    log.append(event="created", details={"template": "debian-12", "ssh_port": 2222})
    log.append(event="exec", details={"argv": ["echo", "hi there"], "exit_code": 0})
    log.append(event="stopped", details={"how": "graceful"})
    return log


def test_verify_passes_then_names_the_edited_line(agentbox_root: Path, capsys) -> None:
    log = three_records(agentbox_root)
    code, out, _ = run(["audit", "verify", "ws"], capsys)
    assert code == 0 and "intact: 3 record(s)" in out

    lines = log.path.read_text().splitlines()
    lines[1] = lines[1].replace('"exit_code": 0', '"exit_code": 1')
    log.path.write_text("\n".join(lines) + "\n")
    code, out, _ = run(["audit", "verify", "ws"], capsys)
    assert code == 1
    assert "BROKEN at line 2 (edited)" in out and "1 record(s) before it verified" in out


def test_verify_json_reports_the_break_for_scripts(agentbox_root: Path, capsys) -> None:
    log = three_records(agentbox_root)
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    code, out, _ = run(["audit", "verify", "ws", "--json"], capsys)
    result = json.loads(out)
    assert code == 1 and result["intact"] is False
    assert result["first_break"]["line"] == 2 and result["first_break"]["kind"] == "deleted"


def test_a_torn_write_fails_verify_until_the_next_append_records_it(agentbox_root: Path, capsys) -> None:
    log = three_records(agentbox_root)
    with log.path.open("ab") as f:
        f.write(b'{"details": {}, "ev')
    code, out, _ = run(["audit", "verify", "ws"], capsys)
    assert code == 1 and "(torn-tail)" in out and "line 4" in out
    log.append(event="started")
    code, out, _ = run(["audit", "verify", "ws"], capsys)
    assert code == 0 and "intact: 5 record(s)" in out
    assert "note: line 4: damaged write" in out and "recorded by line 5" in out


def test_verify_calls_a_log_cut_after_an_anchor_broken(agentbox_root: Path, capsys) -> None:
    log = three_records(agentbox_root)
    record_anchor(log=log, why="stopped")
    code, out, _ = run(["audit", "verify", "ws"], capsys)
    assert code == 0 and "intact: 3 record(s), 1 anchor(s) hold" in out and "note: no anchors file" not in out

    lines = log.path.read_text().splitlines()
    log.path.write_text(lines[0] + "\n")  # what is left still chains
    code, out, _ = run(["audit", "verify", "ws"], capsys)
    assert code == 1 and "audit log BROKEN at line 2 (truncated): the log ends at record 1 but an anchor from" in out
    assert "(stopped) vouches for record 3" in out
    code, out, _ = run(["audit", "verify", "ws", "--json"], capsys)
    assert code == 1 and json.loads(out)["first_break"]["kind"] == "truncated"


def test_verify_says_when_a_log_has_no_anchors(agentbox_root: Path, capsys) -> None:
    three_records(agentbox_root)
    code, out, _ = run(["audit", "verify", "ws"], capsys)
    assert code == 0 and "intact" in out
    assert "note: no anchors file (a log from before anchors): records removed from the end would not show" in out


def test_show_prints_one_line_per_record_with_its_details(agentbox_root: Path, capsys) -> None:
    three_records(agentbox_root)
    code, out, err = run(["audit", "ws"], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 3
    assert "created" in lines[0] and "ssh_port=2222" in lines[0] and "template=debian-12" in lines[0]
    assert "argv=\"echo 'hi there'\"" in lines[1] and "exit_code=0" in lines[1]
    assert run(["audit", "show", "ws"], capsys)[1] == out


def test_show_json_gives_json_lines_that_chain(agentbox_root: Path, capsys) -> None:
    three_records(agentbox_root)
    code, out, _ = run(["audit", "ws", "--json"], capsys)
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["event"] for r in records] == ["created", "exec", "stopped"]
    assert [r["prev"] for r in records[1:]] == [r["hash"] for r in records[:-1]]
    assert records[1]["details"]["argv"] == ["echo", "hi there"]


def test_show_warns_when_the_log_does_not_verify(agentbox_root: Path, capsys) -> None:
    log = three_records(agentbox_root)
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join([lines[1], lines[0], lines[2]]) + "\n")
    code, out, err = run(["audit", "ws"], capsys)
    assert code == 0 and len(out.splitlines()) == 3
    assert "warning: this log does not verify" in err and "agentbox audit verify ws" in err


@pytest.mark.parametrize("since", ["10m", "1h", "30m"])
def test_since_accepts_ages(agentbox_root: Path, capsys, since: str) -> None:
    now = datetime.now(UTC)
    log_of(agentbox_root, "ws", at=now - timedelta(hours=2)).append(event="old")
    log_of(agentbox_root, "ws", at=now - timedelta(minutes=5)).append(event="recent")
    code, out, _ = run(["audit", "ws", "--since", since, "--json"], capsys)
    assert code == 0 and [json.loads(line)["event"] for line in out.splitlines()] == ["recent"]


def test_since_accepts_iso_8601(agentbox_root: Path, capsys) -> None:
    log_of(agentbox_root, "ws", at=datetime(2024, 5, 1, 9, 0, tzinfo=UTC)).append(event="old")
    log_of(agentbox_root, "ws", at=datetime(2024, 5, 1, 11, 0, tzinfo=UTC)).append(event="recent")
    for since in ("2024-05-01T10:00Z", "2024-05-01T12:00:00+02:00"):
        code, out, _ = run(["audit", "ws", "--since", since], capsys)
        assert code == 0 and "recent" in out and "old" not in out, since
    code, out, _ = run(["audit", "ws", "--since", "2024-05-02T00:00Z"], capsys)
    assert code == 0 and out == "no audit records since 2024-05-02T00:00Z\n"


@pytest.mark.parametrize("bad", ["yesterday", "10x", "2024-13-01", "-5m"])
def test_a_bad_since_is_refused_with_examples(agentbox_root: Path, capsys, bad: str) -> None:
    three_records(agentbox_root)
    code, _, err = run(["audit", "ws", f"--since={bad}"], capsys)
    assert code == 2 and "is neither an ISO 8601 time nor an age" in err and "--since 10m" in err


def test_an_unknown_workspace_has_no_log(agentbox_root: Path, capsys) -> None:
    for argv in (["audit", "ghost"], ["audit", "verify", "ghost"]):
        code, _, err = run(argv, capsys)
        assert code == 4, argv
        assert "no audit log for workspace 'ghost'" in err and "hint: agentbox list" in err


def test_bad_arguments_say_how(agentbox_root: Path, capsys) -> None:
    three_records(agentbox_root)
    code, _, err = run(["audit", "verify", "ws", "--follow"], capsys)
    assert code == 2 and "agentbox audit verify ws" in err
    code, _, err = run(["audit", "Bad_Name"], capsys)
    assert code == 2 and "invalid workspace name" in err
    code, _, err = run(["audit", "ws", "extra", "words"], capsys)
    assert code == 2 and "agentbox audit verify NAME" in err


def test_help_explains_both_forms(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "agentbox audit [show] NAME" in out and "agentbox audit verify NAME" in out and "--since" in out


def test_destroy_keeps_the_log_and_purge_removes_it(agentbox_root: Path, capsys) -> None:
    for purge in (False, True):
        (agentbox_root / "data" / "workspaces" / "ws").mkdir(parents=True)
        three_records(agentbox_root)
        code, out, _ = run(["destroy", "ws", "--yes", *(["--purge"] if purge else [])], capsys)
        assert code == 0
        if not purge:
            assert "audit log kept" in out
            code, out, _ = run(["audit", "ws", "--json"], capsys)
            assert json.loads(out.splitlines()[-1])["event"] == "destroyed"
            assert run(["audit", "verify", "ws"], capsys)[0] == 0
        else:
            assert run(["audit", "ws"], capsys)[0] == 4


def test_verify_walks_every_segment_and_names_the_file_of_a_break(agentbox_root: Path, capsys) -> None:
    path = agentbox_root / "data" / "audit" / "ws.jsonl"
    log = AuditLog(path=path, rotate_bytes=400)
    for n in range(20):
        log.append(event="exec", details={"argv": ["make", f"step{n}"], "exit_code": 0})
    segments = sorted(path.parent.glob("ws.jsonl.*"), key=lambda p: int(p.suffix[1:]))
    code, out, _ = run(["audit", "verify", "ws"], capsys)
    assert code == 0 and f"intact: 20 record(s) in {len(segments) + 1} files" in out
    code, out, _ = run(["audit", "ws"], capsys)
    assert [line.split()[2] for line in out.splitlines()] == [str(n) for n in range(1, 21)]  # seq, in order

    segments[1].unlink()
    code, out, err = run(["audit", "verify", "ws"], capsys)
    assert code == 1 and f"BROKEN at line 1 of {segments[2].name} (deleted)" in out
    code, out, err = run(["audit", "ws"], capsys)
    assert code == 0 and "warning: this log does not verify" in err


def test_a_file_system_mounted_over_the_audit_dir_is_named_when_it_hides_the_log(agentbox_root: Path,
                                                                                capsys) -> None:
    log = three_records(agentbox_root)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(log.path.parent)], check=True)
    try:
        code, _, err = run(["audit", "verify", "ws"], capsys)
    finally:
        subprocess.run(["umount", str(log.path.parent)], check=True)
    assert code == 4 and "no audit log for workspace 'ws'" in err
    assert "is a mount point: a log written before it was mounted is hidden beneath it" in err
    code, out, _ = run(["audit", "verify", "ws"], capsys)
    assert code == 0 and "intact: 3 record(s)" in out  # it was there all along


def test_export_then_verify_the_bundle_anywhere(agentbox_root: Path, capsys, tmp_path: Path) -> None:
    log = three_records(agentbox_root)
    record_anchor(log=log, why="test")
    out_file = tmp_path / "elsewhere" / "ws.tar.gz"
    out_file.parent.mkdir()
    code, out, _ = run(["audit", "export", "ws", "--out", str(out_file)], capsys)
    assert code == 0 and f"wrote {out_file}" in out and "audit verify --bundle" in out
    log.path.unlink()  # the bundle stands alone
    code, out, _ = run(["audit", "verify", "--bundle", str(out_file)], capsys)
    assert code == 0, out
    assert "workspace ws" in out and "intact: 3 record(s)" in out and out.rstrip().endswith("bundle intact")
    code, out, _ = run(["audit", "verify", "--bundle", str(out_file), "--json"], capsys)
    assert json.loads(out)["intact"] is True


@pytest.mark.parametrize("argv, needle", [
    (["audit", "export", "ws"], "export needs --out"),
    (["audit", "ws", "--out", "x.tar.gz"], "apply to export"),
    (["audit", "show", "--bundle", "x.tar.gz"], "--bundle goes with verify alone"),
    (["audit", "verify", "--bundle", "/nonexistent.tar.gz"], "not an agentbox audit bundle"),
])
def test_export_and_bundle_options_out_of_place_are_clear_errors(agentbox_root: Path, capsys, argv: list[str],
                                                                 needle: str) -> None:
    three_records(agentbox_root)
    code, _, err = run(argv, capsys)
    assert code == 2 and needle in err
