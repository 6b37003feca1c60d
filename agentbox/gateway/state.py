"""What the gateway reads and keeps between requests: the live network mode (the policy file
the egress proxy persists), the workspace's phantom token, the session's API use (written
after each request, so a restarted gateway still enforces the budget) and the audit trail."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agentbox.audit import AuditLog
from agentbox.egress.daemon import load_policy_file
from agentbox.errors import AgentboxError
from agentbox.model.api_use import ApiUse
from agentbox.model.network import NetworkMode
from agentbox.stores.gateway_tokens import read_usage

log = logging.getLogger(__name__)


class ModeReader:
    """The workspace's network mode, read again only when the policy file changed. An
    unreadable or missing file counts as `off`: the gateway fails closed."""

    def __init__(self, *, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self._mode = NetworkMode.OFF

    def mode(self) -> NetworkMode:
        try:
            info = os.stat(self._path)
        except OSError:
            self._stamp, self._mode = None, NetworkMode.OFF
            return self._mode
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            try:
                self._mode = load_policy_file(path=self._path).mode
            except AgentboxError as exc:
                log.warning("cannot read the policy (%s): the gateway refuses everything", exc.message)
                self._mode = NetworkMode.OFF
            self._stamp = stamp
        return self._mode


class UsageBook:
    """API use per token; only the current token's entry is kept (an old one is dead)."""

    def __init__(self, *, path: Path) -> None:
        self._path = path
        self._token, self._use = read_usage(path=path)

    def use(self, token_id: str) -> ApiUse:
        return self._use if token_id == self._token else ApiUse()

    def add(self, token_id: str, use: ApiUse, *, save: bool = True) -> None:
        """Count `use`; with `save`, write the count down (once per request, at its end)."""
        self._use = self.use(token_id).plus(use)
        self._token = token_id
        if not save:
            return
        tmp = self._path.with_name(f".{self._path.name}.tmp")
        try:  # replaced whole, but not fsync'd: a few ms per request, for a count a crash may lose
            tmp.write_text(json.dumps({"token": token_id, "use": asdict(self._use)}))
            os.replace(tmp, self._path)
        except OSError as exc:  # counting goes on in memory
            log.error("cannot write %s: %s", self._path, exc)


class AuditSink:
    """Appends on one worker thread: an append takes a lock and an fsync, which must not
    stall the event loop; one thread keeps the order."""

    def __init__(self, *, path: Path | None) -> None:
        self._log = AuditLog(path=path) if path is not None else None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit")

    def append(self, *, event: str, details: Mapping[str, Any]) -> None:
        if self._log is not None:
            self._worker.submit(self._append, event, dict(details))

    def _append(self, event: str, details: dict[str, Any]) -> None:
        assert self._log is not None
        try:
            self._log.append(event=event, details=details)
        except AgentboxError as exc:
            log.error("cannot append to the audit log: %s", exc.message)

    def close(self) -> None:
        self._worker.shutdown(wait=True)
