"""A replaced file is either the old one or the new one, with the asked-for mode, and a
failed write leaves the old contents and no temporary file behind."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agentbox.config.atomic_file import write_atomically


def test_replaces_the_file_with_the_mode_asked_for(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    target.write_text("old")
    write_atomically(path=target, data=b"new", mode=0o644)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    write_atomically(path=target, data=b"secret")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_a_failed_write_keeps_the_old_contents_and_leaves_nothing(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "policy.json"
    target.write_text("old")

    def full_disk(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("agentbox.config.atomic_file.os.fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(path=target, data=b"new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["policy.json"]
