"""The process that ends a time-limited session: `agentbox session expire NAME --id ID`,
started detached so it outlives the command that armed it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from agentbox.config.paths import ROOT_ENV, AppPaths
from agentbox.errors import AgentboxError


class ProcessSessionTimer:
    def __init__(self, *, paths: AppPaths) -> None:
        self._paths = paths

    def arm(self, *, name: str, session_id: str) -> int:
        env = dict(os.environ)
        if self._paths.root is not None:
            env[ROOT_ENV] = str(self._paths.root)
        log = self._paths.workspace_dir(name) / "session-timer.log"
        with log.open("ab") as err:
            try:
                child = subprocess.Popen(
                    [sys.executable, "-m", "agentbox", "session", "expire", name, "--id", session_id],
                    env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                    start_new_session=True, close_fds=True)  # its own session: Ctrl-C here spares it
            except OSError as exc:
                raise AgentboxError(f"could not start the session timer: {exc.strerror}") from None
        return child.pid

    def disarm(self, *, handle: int) -> None:
        # Only a process that is still our timer: PIDs get reused.
        try:
            cmdline = Path(f"/proc/{handle}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return
        if b"expire" in cmdline and b"agentbox" in cmdline:
            try:
                os.kill(handle, signal.SIGTERM)
            except ProcessLookupError:
                pass
