"""Recorded sessions in a real guest: what a person types in `agentbox ssh` and what the
guest shows come back from `agentbox replay`; `exec` output too; an edited recording is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from agentbox.config.paths import ROOT_ENV

from ..pty_terminal import open_user_terminal
from .conftest import VmEnv


def agentbox(env: VmEnv, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentbox", *argv], env={**os.environ, ROOT_ENV: str(env.root)},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)


def recordings(env: VmEnv, name: str) -> list[dict[str, object]]:
    listed = agentbox(env, "recordings", name, "--json")
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


def test_a_typed_shell_session_is_replayed_as_it_was_shown(vm_env: VmEnv, clean_workspace: str) -> None:
    name = clean_workspace
    before = {r["id"] for r in recordings(vm_env, name)}
    user = open_user_terminal(columns=100, lines=30)
    try:
        shell = subprocess.Popen([sys.executable, "-m", "agentbox", "ssh", name],
                                 env={**os.environ, ROOT_ENV: str(vm_env.root), "TERM": "xterm"},
                                 stdin=user.slave, stdout=user.slave, stderr=user.slave)
        user.read_until(b"$ ", timeout_s=120)  # the guest's prompt
        user.type("echo typed-$((6*7)); stty size\r")
        user.read_until(b"30 100", timeout_s=60)  # the guest's pty has the user's window size
        user.type("exit\r")
        assert shell.wait(timeout=60) == 0
    finally:
        user.close()
    (new,) = [r for r in recordings(vm_env, name) if r["id"] not in before]
    assert new["kind"] == "shell" and new["integrity"] == "matches"
    replay = agentbox(vm_env, "replay", name, str(new["id"]), "--no-wait")
    assert replay.returncode == 0, replay.stderr
    assert "echo typed-$((6*7))" in replay.stdout  # what was typed, as the guest echoed it
    assert "typed-42" in replay.stdout  # and what the guest answered


def test_exec_output_is_recorded_and_an_edited_recording_is_refused(vm_env: VmEnv, clean_workspace: str) -> None:
    name = clean_workspace
    ran = agentbox(vm_env, "exec", name, "--", "sh", "-c", "echo from-exec-$((2+3))")
    assert ran.returncode == 0 and ran.stdout == "from-exec-5\n", ran.stderr
    newest = recordings(vm_env, name)[-1]
    assert newest["kind"] == "exec" and newest["argv"] == ["sh", "-c", "echo from-exec-$((2+3))"]
    replay = agentbox(vm_env, "replay", name, str(newest["id"]), "--no-wait")
    assert replay.stdout == "from-exec-5\n"
    cast = vm_env.paths.workspace_recordings(name) / f"{newest['id']}.cast"
    cast.write_text(cast.read_text().replace("from-exec-5", "from-exec-6"))
    refused = agentbox(vm_env, "replay", name, str(newest["id"]), "--no-wait")
    assert refused.returncode == 1 and refused.stdout == ""
    assert "changed" in refused.stderr
    verify = agentbox(vm_env, "audit", "verify", name)
    assert verify.returncode == 0, verify.stdout + verify.stderr  # the log itself is intact: the file was edited

