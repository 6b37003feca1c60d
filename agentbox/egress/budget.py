"""The session's egress byte budget, as the proxy enforces it while it relays.

The limit and the session come from the session file (services/sessions.py writes it at
session start; `agentbox budget` rewrites it): no session file, no budget. Bytes count both
ways, per session: a new session id starts at 0. Reaching the limit trips the budget once:
the proxy cuts every live connection there and then and refuses new ones until the session
changes or the limit is raised above the count. The count goes to `egress-usage.json` (at
most once a second, and at once when it trips), where the supervisor and the status views
read it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentbox.config.atomic_file import write_atomically

log = logging.getLogger(__name__)

EGRESS_USAGE_FILE = "egress-usage.json"
RULE_BUDGET = "budget:egress_bytes"
_RECHECK_S = 0.5  # how often the session file's stamp is looked at while bytes flow
_SAVE_EVERY_S = 1.0


@dataclass(frozen=True)
class EgressUse:
    session: str
    bytes: int
    limit: int
    exceeded: bool


def read_egress_use(*, path: Path) -> EgressUse | None:
    """What the proxy last wrote; None without a readable file."""
    try:
        raw = json.loads(path.read_text())
        return EgressUse(session=str(raw["session"]), bytes=int(raw["bytes"]), limit=int(raw["limit"]),
                         exceeded=bool(raw["exceeded"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class EgressBudget:
    def __init__(self, *, session_file: Path | None, usage_file: Path | None,
                 on_exceeded: Callable[[str], None] = lambda _why: None) -> None:
        self._session_file = session_file
        self._usage_file = usage_file
        self.on_exceeded = on_exceeded  # the proxy's: cut every live connection
        self._stamp: tuple[int, int, int] | None = None
        self._session, self._limit = "", 0
        self.used, self.exceeded = 0, False
        self._checked = self._saved = 0.0
        previous = read_egress_use(path=usage_file) if usage_file else None
        self._refresh(force=True)
        if previous is not None and previous.session == self._session and self._session:
            self.used, self.exceeded = previous.bytes, previous.exceeded  # a restarted proxy goes on counting
            self._save()

    @property
    def limit(self) -> int:
        return self._limit

    def refusal(self) -> str | None:
        """Why a new connection is refused now (None: it may go)."""
        self._refresh(force=False)
        return self._why() if self.exceeded else None

    def add(self, count: int) -> None:
        self.used += count
        now = time.monotonic()
        if now - self._checked >= _RECHECK_S:
            self._refresh(force=False)
        if self._limit and not self.exceeded and self.used >= self._limit:
            self.exceeded = True
            self._save()
            log.warning("egress budget exceeded: %s", self._why())
            self.on_exceeded(self._why())
        elif now - self._saved >= _SAVE_EVERY_S:
            self._save()

    def _why(self) -> str:
        return f"this session's egress budget is used up ({self.used} of {self._limit} bytes)"

    def _refresh(self, *, force: bool) -> None:
        self._checked = time.monotonic()
        if self._session_file is None:
            return
        try:
            info = os.stat(self._session_file)
            stamp: tuple[int, int, int] | None = (info.st_ino, info.st_mtime_ns, info.st_size)
        except OSError:
            stamp = None
        if stamp == self._stamp and not force:
            return
        self._stamp = stamp
        session, limit = "", 0
        if stamp is not None:
            try:
                raw = json.loads(self._session_file.read_text())
                session, limit = str(raw.get("id", "")), int(raw.get("egress_bytes", 0))
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                log.warning("cannot read the session file (%s): no egress budget", exc)
        if session != self._session:
            self.used, self.exceeded = 0, False  # each session has its own budget
        self._session, self._limit = session, limit
        if self.exceeded and (not limit or self.used < limit):
            self.exceeded = False  # a raised limit (`agentbox budget NAME --egress 2G --resume`): it goes on
        if self.exceeded is False and limit and self.used >= limit:
            self.exceeded = True  # a lowered limit (agentbox budget)
            self.on_exceeded(self._why())
        self._save()

    def _save(self) -> None:
        self._saved = time.monotonic()
        if self._usage_file is None:
            return
        data = {"session": self._session, "bytes": self.used, "limit": self._limit, "exceeded": self.exceeded}
        try:
            write_atomically(path=self._usage_file, data=(json.dumps(data) + "\n").encode())
        except Exception as exc:  # noqa: BLE001 - counting and cutting go on in memory
            log.error("cannot write %s: %s", self._usage_file, exc)
