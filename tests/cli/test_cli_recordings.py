"""`agentbox recordings NAME` and `agentbox replay NAME ID` through main(argv), from the data
dir alone: they work after the workspace is gone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentbox.audit import AuditLog
from agentbox.cli.main import main
from agentbox.config.paths import AppPaths
from agentbox.stores.recordings import CastWriter


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def saved(root: Path, chunks: list[tuple[float, bytes]], *, recording_id: str = "c0ffee123456") -> Path:
    """A recording as `agentbox ssh` leaves it: the file, and its two audit records."""
    paths = AppPaths.under(root=root)
    directory = paths.workspace_recordings("ws")
    directory.mkdir(parents=True)
    log = AuditLog(path=paths.audit_log("ws"))
    log.append(event="recording.started", details={"recording": recording_id, "kind": "shell", "argv": ["(shell)"]})
    writer = CastWriter(path=directory / f"{recording_id}.cast", width=100, height=30, title="ws: (shell)")
    for at, data in chunks:
        writer.write(at, data)
    cast = writer.close()
    log.append(event="recording.saved", details={"recording": recording_id, "kind": "shell", "argv": ["(shell)"],
                                                 "sha256": cast.sha256, "bytes": cast.bytes,
                                                 "duration_s": cast.duration_s, "exit_code": 0})
    return cast.path


SESSION = [(0.0, b"agent@ws:~$ "), (0.4, b"echo hi\r\n"), (0.5, b"hi\r\n"), (0.6, b"agent@ws:~$ ")]


def test_recordings_lists_them_with_their_integrity(agentbox_root: Path, capsys) -> None:
    saved(agentbox_root, SESSION)
    code, out, _ = run(["recordings", "ws"], capsys)
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:6] == ["ID", "STARTED", "KIND", "SECONDS", "BYTES", "INTEGRITY"]
    assert row.startswith("c0ffee123456") and " shell " in row and " matches " in row
    code, out, _ = run(["recordings", "ws", "--json"], capsys)
    (entry,) = json.loads(out)
    assert entry["id"] == "c0ffee123456" and entry["integrity"] == "matches"


def test_replay_shows_what_the_session_showed(agentbox_root: Path, capsys) -> None:
    saved(agentbox_root, SESSION)
    code, out, err = run(["replay", "ws", "c0ff", "--no-wait"], capsys)
    assert code == 0 and err == ""
    assert out == "agent@ws:~$ echo hi\r\nhi\r\nagent@ws:~$ "


def test_replay_refuses_a_changed_recording_unless_forced(agentbox_root: Path, capsys) -> None:
    path = saved(agentbox_root, SESSION)
    path.write_text(path.read_text().replace("hi\\r\\n", "pwned\\r\\n"))
    code, out, err = run(["replay", "ws", "c0ffee123456", "--no-wait"], capsys)
    assert code == 1 and out == ""
    assert "changed" in err and "agentbox audit verify ws" in err
    code, out, _ = run(["replay", "ws", "c0ffee123456", "--no-wait", "--force"], capsys)
    assert code == 0 and "pwned" in out


def test_replay_keeps_the_pauses_but_caps_long_ones(agentbox_root: Path, capsys, monkeypatch) -> None:
    saved(agentbox_root, [(0.0, b"a\n"), (1.0, b"b\n"), (500.0, b"c\n")])
    slept: list[float] = []
    monkeypatch.setattr("agentbox.cli.recording_commands.time.sleep", slept.append)
    code, out, _ = run(["replay", "ws", "c0ffee123456", "--speed", "2"], capsys)
    assert code == 0 and out == "a\nb\nc\n"
    assert slept == [0.5, 1.0]  # 1 s at double speed, then 500 s capped at 2 s, at double speed


@pytest.mark.parametrize("argv, needle", [
    (["replay", "ws", "zz"], "not a recording id"),
    (["replay", "ws", "abcd"], "has no recording"),
    (["replay", "ws", "c0ffee", "--speed", "0"], "--speed"),
    (["replay", "../x", "abcd"], "workspace"),
])
def test_replay_bad_input_is_a_clear_error(agentbox_root: Path, capsys, argv: list[str], needle: str) -> None:
    saved(agentbox_root, SESSION)
    code, _, err = run(argv, capsys)
    assert code != 0 and needle in err and "Traceback" not in err
