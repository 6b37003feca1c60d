"""The real `agentbox` command in a real terminal (tmux), as a person would see it: no
arguments opens the dashboard; q quits back to the shell.

Runs on the libvirt test driver with an isolated AGENTBOX_ROOT, in a tmux server of its own
(a private socket), and kills only the session it made.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentbox.config.paths import ROOT_ENV
from agentbox.config.settings import URI_ENV
from agentbox.tui.app import SUB_TITLE, TITLE
from agentbox.tui.dashboard import EMPTY_TEXT
from tests.conftest import EMPTY_NODE

SESSION = "agentbox-tui"
WAIT_S = 60.0  # generous: the machine is shared with VM tests; passing runs take ~2 s


class Tmux:
    def __init__(self, *, binary: str, socket: str) -> None:
        self._base = [binary, "-L", socket]

    def __call__(self, *args: str, check: bool = True) -> str:
        done = subprocess.run([*self._base, *args], capture_output=True, text=True, check=False,
                              env={k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")})
        if check and done.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", SESSION)

    def wait_for(self, condition: Callable[[str], bool], *, what: str) -> str:
        deadline = time.monotonic() + WAIT_S
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if condition(screen):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"never saw {what}; the screen was:\n{screen}")


@pytest.fixture()
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    binary = shutil.which("tmux")
    if binary is None:
        pytest.fail("tmux is not installed: this test needs it (sudo apt-get install tmux)")
    # A socket of our own: no other tmux server or session is ever touched.
    runner = Tmux(binary=binary, socket=f"agentbox-test-{os.getpid()}-{tmp_path.name}")
    yield runner
    runner("kill-session", "-t", SESSION, check=False)


def test_agentbox_without_arguments_opens_the_dashboard_and_q_quits(tmp_path: Path, tmux: Tmux) -> None:
    root = tmp_path / "agentbox"
    (root / "config").mkdir(parents=True)
    (root / "config" / "settings.yaml").write_text(
        f"storage_dir: {tmp_path / 'storage'}\nimage_dir: {tmp_path / 'images'}\n")
    node = tmp_path / "node.xml"
    node.write_text(EMPTY_NODE)  # one VM that is not agentbox's: it must not be listed
    agentbox = Path(sys.executable).with_name("agentbox")
    assert agentbox.exists(), f"the agentbox command is not installed in {agentbox.parent}"
    command = f"{shlex.quote(str(agentbox))}; echo EXITED:$?; sleep 600"  # keep the pane to read the end

    tmux("new-session", "-d", "-s", SESSION, "-x", "100", "-y", "30",
         "-e", f"{ROOT_ENV}={root}", "-e", f"{URI_ENV}=test://{node}", "-e", "TERM=xterm-256color", command)

    screen = tmux.wait_for(lambda s: ("palette" in s and EMPTY_TEXT in s) or "Traceback" in s or "EXITED" in s,
                           what="the dashboard")
    assert "Traceback" not in screen and "EXITED" not in screen, screen
    lines = screen.splitlines()
    assert len(lines) == 30, screen  # the whole terminal
    assert f"{TITLE} — {SUB_TITLE}" in lines[0]
    assert EMPTY_TEXT in screen
    assert "someone-elses-vm" not in screen
    footer = lines[-1]
    assert "q Quit" in footer and "n New" in footer and "palette" in footer, screen

    tmux("send-keys", "-t", SESSION, "q")
    screen = tmux.wait_for(lambda s: "EXITED:" in s, what="agentbox exit")
    assert "EXITED:0" in screen
