"""A helper process its parent keeps alive: started as a child that dies with the parent
(host/process_identity.spawn_child), restarted with backoff when it exits, stopped with
SIGTERM then SIGKILL. The parent polls it; nothing here runs by itself."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from agentbox.host.process_identity import ProcessIdentity, identity_of, spawn_child

ChildProcess = subprocess.Popen[bytes]
RESTART_MIN_S, RESTART_MAX_S = 0.2, 5.0
STABLE_S = 10.0  # a child that lived this long gets its quick restart back


class SupervisedChild:
    """One child process, restarted with backoff by whoever polls it."""

    def __init__(self, *, name: str, argv: Callable[[], list[str]], log_path: Path,
                 ready: Callable[[ChildProcess], bool]) -> None:
        self.name = name
        self._argv = argv
        self._log = log_path
        self._ready = ready
        self.child: ChildProcess | None = None
        self.identity: ProcessIdentity | None = None
        self._started = 0.0
        self._delay = RESTART_MIN_S
        self._not_before = 0.0

    def poll(self) -> int | None:
        """Reaps a dead child; returns its exit code once, else None."""
        if self.child is None or self.child.poll() is None:
            return None
        code = self.child.returncode
        lived = time.monotonic() - self._started
        self._delay = RESTART_MIN_S if lived > STABLE_S else min(self._delay * 2, RESTART_MAX_S)
        self._not_before = time.monotonic() + self._delay
        self.child, self.identity = None, None
        return code

    def start_if_due(self) -> None:
        if self.child is not None or time.monotonic() < self._not_before:
            return
        self.child = spawn_child(argv=self._argv(), log_file=self._log, env=os.environ)
        self._started = time.monotonic()

    def ready_identity(self) -> ProcessIdentity | None:
        """Its identity once it is ready to serve (None before)."""
        if self.child is not None and self.identity is None and self._ready(self.child):
            self.identity = identity_of(self.child.pid)
        return self.identity

    def stop(self) -> None:
        if self.child is None:
            return
        self.child.terminate()
        try:
            self.child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()
        self.child, self.identity = None, None
        self._not_before = 0.0
