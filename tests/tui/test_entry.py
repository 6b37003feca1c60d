"""How the TUI is reached from the command line: `agentbox` alone and `agentbox tui`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agentbox.entry import main
from agentbox.tui.app import AgentboxApp


@pytest.fixture()
def started(monkeypatch: pytest.MonkeyPatch) -> list[AgentboxApp]:
    """Record the app instead of taking over the test's terminal."""
    apps: list[AgentboxApp] = []
    monkeypatch.setattr(AgentboxApp, "run", lambda self, *a, **k: apps.append(self))
    return apps


def _terminal(monkeypatch: pytest.MonkeyPatch, *, tty: bool) -> None:
    monkeypatch.setattr(sys.stdin, "isatty", lambda: tty)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: tty)


def test_agentbox_tui_opens_the_app_on_the_configured_services(agentbox_root: Path, started: list[AgentboxApp],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _terminal(monkeypatch, tty=True)
    assert main(["tui"]) == 0
    assert len(started) == 1
    services = started[0].services
    assert services.audit.log_path(name="ws").is_relative_to(agentbox_root)
    assert services.workspaces.list() == ()  # on the test driver of the settings (no libvirtd there)


def test_agentbox_alone_in_a_terminal_opens_the_app(agentbox_root: Path, started: list[AgentboxApp],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _terminal(monkeypatch, tty=True)
    assert main([]) == 0
    assert len(started) == 1


def test_agentbox_alone_in_a_pipe_prints_the_help_instead(agentbox_root: Path, started: list[AgentboxApp],
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    _terminal(monkeypatch, tty=False)
    assert main([]) == 0
    assert started == []
    assert "usage: agentbox" in capsys.readouterr().out


def test_a_settings_error_is_reported_by_the_cli_not_as_a_traceback(agentbox_root: Path, started: list[AgentboxApp],
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    _terminal(monkeypatch, tty=True)
    (agentbox_root / "config" / "settings.yaml").write_text("accel: warp\n")
    assert main(["tui"]) == 3
    err = capsys.readouterr().err
    assert "error:" in err and "accel" in err and "Traceback" not in err
    assert started == []
