"""QMP, the QEMU Machine Protocol, through the QEMU project's own client library
(`qemu.qmp`): the only module that imports it (an import-linter contract).

Each use is one short session (connect, commands, disconnect) on an event loop of its own,
so callers stay synchronous and any thread may use it. QEMU serves one monitor client at a
time; a second one waits in the socket's queue until the first is done.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from qemu.qmp import ConnectError, ExecuteError, QMPClient, QMPError

from agentbox.errors import BackendError

CONNECT_TIMEOUT_S = 30.0
COMMAND_TIMEOUT_S = 60.0


class Monitor:
    def __init__(self, *, socket: Path, domain: str) -> None:
        self._socket = socket
        self._domain = domain
        self._loop = asyncio.new_event_loop()
        self._client = QMPClient(domain)

    def __enter__(self) -> Monitor:
        try:
            self._run(self._client.connect(str(self._socket)), timeout=CONNECT_TIMEOUT_S)
        except (ConnectError, OSError, TimeoutError) as exc:
            self._loop.close()
            raise BackendError(f"cannot reach the QEMU monitor of {self._domain!r} ({self._socket}): {exc}",
                               hint="the VM may have stopped meanwhile; `agentbox list` shows its state") from None
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._run(self._client.disconnect(), timeout=10)
        except (QMPError, OSError, TimeoutError):
            pass  # QEMU went away (quit): nothing left to close
        finally:
            self._loop.close()

    def execute(self, command: str, args: Mapping[str, object] | None = None, *, action: str = "") -> object:
        """The command's return value; BackendError with QEMU's own words if it fails."""
        what = action or f"{command} on {self._domain!r}"
        try:
            return self._run(self._client.execute(command, dict(args or {})), timeout=COMMAND_TIMEOUT_S)
        except ExecuteError as exc:
            raise BackendError(f"{what}: {exc}") from None
        except (QMPError, OSError, TimeoutError) as exc:
            raise BackendError(f"{what}: the QEMU monitor failed ({exc or type(exc).__name__})") from None

    def wait_event(self, name: str, *, match: Callable[[Mapping[str, object]], bool], timeout_s: float) -> bool:
        """Whether event `name` whose data satisfies `match` arrived within `timeout_s`
        (events since this session connected count)."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self._run(self._client.events.get(), timeout=left)
            except TimeoutError:
                return False
            if not isinstance(event, Mapping):
                continue
            data = event.get("data", {})
            if event.get("event") == name and isinstance(data, Mapping) and match(data):
                return True
        return False

    def _run(self, awaitable: object, *, timeout: float) -> object:
        return self._loop.run_until_complete(asyncio.wait_for(awaitable, timeout))  # type: ignore[arg-type]
