"""The agent templates for real: the `agents` image (Claude Code and Codex from npm, Aider
from PyPI, installed at build time as a layer on debian-12, cached in the shared image dir
under its recipe hash, so a rerun on this machine reuses it), one guest made from it, each
agent run as the guest user, Aider's own client answered by the local fake provider through
the credential gateway (the real key only on the host), and an agent terminal opened in tmux.

The first run builds the image: many minutes (Node, npm and Aider's Python dependencies);
later runs find it cached.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentbox.config.paths import ROOT_ENV
from agentbox.errors import Busy
from agentbox.images.record import ImageInfo
from agentbox.model.progress import CancelToken
from tests.fake_provider import ANSWER, FakeProvider
from tests.tui.test_tmux import SESSION, Tmux

from .conftest import VmEnv, _log, quiet, run_in
from .gateway_env import provider_for_guests

GUEST = "agents"
VERSIONS = {"claude": "2.1.112", "codex": "0.171.0", "aider": "0.86.2"}  # the pins in vm_templates/agents.yaml
AGENT_WAIT_S = 600.0  # an agent's first screen under TCG on a shared machine
SECRET_PART = secrets.token_hex(12)
REAL_KEY = f"sk-agents-vmtest-{SECRET_PART}"
KEY_PATTERN = f"sk-agents-vmtest-[{SECRET_PART[0]}]{SECRET_PART[1:]}"  # the grep's argv stays clean
AGENTBOX_PROGRESS = re.compile(r"\[\d+/\d+\] (power off|swap): ")  # the session's reset has begun


@pytest.fixture(scope="module")
def image(vm_env: VmEnv) -> ImageInfo:
    return vm_env.services().images.pull(template="agents", on_progress=_log, cancel=CancelToken())


@pytest.fixture(scope="module")
def provider(vm_env: VmEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeProvider]:
    """The fake provider, for the workspace's gateway: set up before the create."""
    with provider_for_guests(vm_env, root=tmp_path_factory.mktemp("provider"), key=REAL_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def workspace(vm_env: VmEnv, image: ImageInfo, provider: FakeProvider,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    project = tmp_path_factory.mktemp("project")
    (project / "README.md").write_text("the project the agent works on\n")
    project.chmod(0o755)
    vm_env.create(GUEST, template="agents", shares=(f"{project}:project",))
    yield GUEST
    deadline = time.monotonic() + 600
    while True:  # an agent terminal killed by a failing test may still be ending its session
        try:
            vm_env.services().workspaces.destroy(name=GUEST, on_progress=quiet)
            return
        except Busy:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def wait_screen(tmux: Tmux, condition: Callable[[str], bool], *, what: str,
                timeout_s: float = AGENT_WAIT_S) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        screen = tmux.screen()
        if condition(screen):
            return screen
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw {what}; the screen was:\n{screen}")
        time.sleep(0.5)


def login_shell(vm_env: VmEnv, script: str) -> tuple[int, str, str]:
    return run_in(vm_env, GUEST, "bash", "-lc", script)


def test_the_agents_image_is_one_cached_layer_with_the_pinned_installs(vm_env: VmEnv, image: ImageInfo) -> None:
    assert image.image_id.startswith("debian-12-layer-") and image.base is not None
    assert image.npm == ("@anthropic-ai/claude-code@2.1.112", "@openai/codex@0.171.0")
    assert image.pip == ("aider-chat==0.86.2",)
    assert {"nodejs", "npm", "python3-venv", "git"} <= set(image.packages)
    again = vm_env.services().images.pull(template="agents", on_progress=quiet, cancel=CancelToken())
    assert again == image  # the same recipe: reused, not rebuilt
    print(f"agents image: {image.image_id}, {image.size_bytes / 2**20:.0f} MiB")


def test_each_agent_runs_as_the_guest_user(vm_env: VmEnv, workspace: str) -> None:
    code, out, err = login_shell(vm_env, "set -e; id -un; claude --version; codex --version; aider --version")
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0] == "agent"
    for command, version in VERSIONS.items():
        assert any(version in line for line in lines[1:]), f"{command} {version} not in {out!r}"


def test_the_guest_user_cannot_change_the_installed_agents(vm_env: VmEnv, workspace: str) -> None:
    # A prompt injection that makes the agent rewrite itself has nowhere to write.
    script = ("for path in $(readlink -f $(command -v claude codex aider)) /usr/local/lib/node_modules "
              "/opt/agentbox/venvs/aider-chat/lib; do test -w \"$path\" && echo \"writable: $path\"; done; "
              "echo checked")
    code, out, err = login_shell(vm_env, script)
    assert (code, out.strip()) == (0, "checked"), out + err


def test_aiders_own_client_gets_its_answer_through_the_gateway_and_never_sees_the_key(
        vm_env: VmEnv, workspace: str, provider: FakeProvider) -> None:
    # Aider (litellm's OpenAI client) as a user runs it, one message, no TTY; its base URL and
    # phantom token come from the login shell (/etc/profile.d/agentbox-gateway.sh).
    seen = len(provider.seen)
    code, out, err = login_shell(vm_env, (
        "cd /tmp && timeout 900 aider --model openai/gpt-4o-mini --no-stream --no-git --yes-always "
        "--no-pretty --no-show-model-warnings --no-check-update --no-analytics --message 'say hello' </dev/null"))
    assert code == 0, out + err
    assert ANSWER in out, out + err
    asked = [s for s in provider.seen[seen:] if s.path.endswith("/chat/completions")]
    assert asked, [s.path for s in provider.seen[seen:]]
    assert asked[-1].header("authorization") == f"Bearer {REAL_KEY}"  # the gateway put the real key in
    assert REAL_KEY not in out + err
    code, out, err = run_in(vm_env, GUEST, "sudo", "grep", "-rlE", KEY_PATTERN, "/home", "/etc", "/root", "/tmp")
    assert code == 1, f"grep found the key (or failed): {out} {err}"  # aider's history files too
    calls = [r.details for r in vm_env.services().audit.records(name=GUEST) if r.event == "gateway.request"]
    assert any(c.get("provider") == "openai" and c.get("status") == 200 and c.get("model") == "gpt-4o-mini"
               for c in calls), calls
    assert REAL_KEY not in vm_env.paths.audit_log(GUEST).read_text()


def test_the_agent_terminal_opens_in_the_project_folder_and_its_session_ends_with_a_reset(
        vm_env: VmEnv, workspace: str, tmp_path: Path) -> None:
    binary = shutil.which("tmux")
    if binary is None:
        pytest.fail("tmux is not installed: this test needs it (sudo apt-get install tmux)")
    tmux = Tmux(binary=binary, socket=f"agentbox-agents-{os.getpid()}")
    env = ["-e", f"{ROOT_ENV}={vm_env.root}", "-e", "TERM=xterm-256color"]
    if "PYTHONPATH" in os.environ:
        env += ["-e", f"PYTHONPATH={os.environ['PYTHONPATH']}"]
    command = (f"{shlex.quote(sys.executable)} -m agentbox agent {GUEST} --agent claude-code; "
               "echo EXITED:$?; sleep 600")
    tmux("new-session", "-d", "-s", SESSION, "-x", "120", "-y", "40", *env, command)
    try:
        # Its prompt, not its folder-trust question: agentbox answered that for the shares.
        screen = wait_screen(tmux, lambda s: "for shortcuts" in s or "trust this folder" in s or "EXITED" in s,
                             what="Claude Code's prompt")
        assert "EXITED" not in screen and "trust this folder" not in screen, screen
        assert "claude-code in agents, in /mnt/shares/project" in screen, screen
        assert "is not mounted" not in screen, screen
        assert vm_env.services().sessions.current(name=GUEST) is not None  # the terminal opened a session
        # While it runs: its state is in the home, the project folder is its working directory.
        code, out, err = login_shell(vm_env, "ls -A ~; for p in /proc/[0-9]*; do echo \"$(cat $p/comm) "
                                     "$(readlink $p/cwd)\"; done 2>&1; true")
        assert code == 0 and ".claude" in out.split() and "/mnt/shares/project" in out, \
            f"{out}{err}\nthe agent's terminal:\n{tmux.screen()}"
        for _ in range(4):  # Ctrl-C twice quits it ("Press Ctrl-C again to exit"); one key per send
            tmux("send-keys", "-t", SESSION, "C-c")
            time.sleep(0.3)
            tmux("send-keys", "-t", SESSION, "C-c")
            try:  # until agentbox's own progress shows: from then on a Ctrl-C would interrupt it
                wait_screen(tmux, lambda s: "EXITED:" in s or AGENTBOX_PROGRESS.search(s) is not None,
                            what="the agent to quit", timeout_s=60)
                break
            except AssertionError:
                continue
        # The session's end (receipt, reset) comes before agentbox returns.
        screen = wait_screen(tmux, lambda s: "EXITED:" in s, what="agentbox agent to return")
        assert "session of agents ended" in screen, screen
    finally:
        tmux("kill-session", "-t", SESSION, check=False)
    assert vm_env.services().sessions.current(name=GUEST) is None
    code, out, _ = login_shell(vm_env, "ls -A ~")
    assert code == 0 and ".claude" not in out.split(), out  # the session's reset wiped the agent's state
