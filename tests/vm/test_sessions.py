"""Sessions on a real guest: a disposable run, and a time limit that ends the session (and
resets the workspace) with nobody watching."""

from __future__ import annotations

import json
import time

import pytest

from agentbox.cli.main import main

from .conftest import VmEnv, run_in

CANARY = "~/session-canary"


def canary_present(env: VmEnv, name: str) -> bool:
    return run_in(env, name, "sh", "-c", f"test -e {CANARY} && echo yes || echo no")[1].strip() == "yes"


def test_run_returns_the_command_exit_code_and_leaves_the_workspace_clean(
        vm_env: VmEnv, clean_workspace: str, monkeypatch: pytest.MonkeyPatch,
        capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    vm_env.cli_env(monkeypatch)
    code = main(["run", "--name", clean_workspace, "--", "sh", "-c", f"echo ran; touch {CANARY}; exit 5"])
    assert code == 5
    captured = capfdbinary.readouterr()
    assert captured.out == b"ran\n"
    assert b"back to clean" in captured.err
    assert not canary_present(vm_env, clean_workspace)


def test_a_session_with_a_time_limit_ends_by_itself_and_resets(
        vm_env: VmEnv, clean_workspace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    vm_env.cli_env(monkeypatch)
    assert main(["session", "start", clean_workspace, "--max-minutes", "0.25"]) == 0
    sessions = vm_env.services().sessions
    assert sessions.current(name=clean_workspace) is not None
    assert run_in(vm_env, clean_workspace, "touch", "session-canary")[0] == 0
    deadline = time.monotonic() + 240
    while sessions.current(name=clean_workspace) is not None:  # the timer process, not this test, ends it
        assert time.monotonic() < deadline, "the session was not ended by its time limit"
        time.sleep(1)
    assert not canary_present(vm_env, clean_workspace)
    audit = [json.loads(line) for line in vm_env.paths.audit_log(clean_workspace).read_text().splitlines()]
    [ended] = [r for r in audit if r["event"] == "session.ended"][-1:]
    assert ended["details"]["reason"] == "time limit reached" and ended["details"]["reset"] == "snapshot"


def test_session_end_through_the_cli_resets(vm_env: VmEnv, clean_workspace: str,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    vm_env.cli_env(monkeypatch)
    assert main(["session", "start", clean_workspace]) == 0
    assert run_in(vm_env, clean_workspace, "touch", "session-canary")[0] == 0
    assert main(["session", "end", clean_workspace]) == 0
    assert "back to clean" in capsys.readouterr().out
    assert not canary_present(vm_env, clean_workspace)
