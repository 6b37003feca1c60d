"""The control socket: a JSON-lines protocol on an owner-only Unix socket, through which
services, the CLI and the TUI read and swap the live policy, watch decisions and answer
approval requests. `agentbox.egress.client` is the synchronous client.

Requests are one JSON object per line with an "op"; answers are `{"ok": true, ...}` or
`{"ok": false, "error": ..., "hint": ..., "kind": "invalid_input"|"error"}`:

    {"op": "get_policy"}                          -> {"ok": true, "policy": {"mode", "allowlist"}}
    {"op": "set_policy", "policy": {...}}         -> {"ok": true, "policy": {...}, "cut": N}
    {"op": "status"}                              -> {"ok": true, "status": {...}}
    {"op": "subscribe", "last": N}                -> {"ok": true}, then {"event": "record", "record": {...}}
    {"op": "approvals"}                           -> {"ok": true}, then {"event": "approval", "request": {...}}
        and on that connection: {"op": "answer", "id": ..., "verdict": "allow_once"|"allow_always"|"deny"}
                                                  -> {"event": "answered", "id": ..., "ok": bool}

A streaming connection stays in its mode until the client closes it. A subscriber that
falls too far behind is disconnected (the JSONL log file still has every record).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentbox.egress.approvals import ApprovalRequest, ApprovalVerdict
from agentbox.egress.proxy import EgressProxy
from agentbox.egress.records import ConnectionRecord
from agentbox.egress.sockets import BoundSocket, bind_unix_socket
from agentbox.egress.wire import JsonObject, approval_to_json, dump_line, policy_from_json, policy_to_json, \
    record_to_json
from agentbox.errors import AgentboxError, InvalidInput
from agentbox.model.network import NetworkMode

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 1024 * 1024
_STREAM_BACKLOG = 1000  # queued lines per streaming client before it counts as stuck


@dataclass(frozen=True)
class EgressStatus:
    pid: int
    uptime_s: float
    open_connections: int
    mode: NetworkMode
    pending_approvals: int


class EgressControlServer:
    def __init__(self, *, proxy: EgressProxy) -> None:
        self._proxy = proxy
        self._started = time.monotonic()
        self._server: asyncio.Server | None = None
        self._bound: BoundSocket | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, *, path: Path) -> None:
        self._bound = bind_unix_socket(path=path)
        self._server = await asyncio.start_unix_server(self._serve, sock=self._bound.sock, limit=MAX_LINE_BYTES)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self._bound is not None:
            self._bound.remove()
            self._bound = None

    def status(self) -> EgressStatus:
        return EgressStatus(
            pid=os.getpid(), uptime_s=round(time.monotonic() - self._started, 3),
            open_connections=self._proxy.open_connections, mode=self._proxy.policy.mode,
            pending_approvals=len(self._proxy.approvals.pending()),
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while message := await _read_message(reader, writer):
                op = message.get("op")
                if op == "subscribe":
                    last = message.get("last", 0)
                    start = last if isinstance(last, int) else 0
                    await self._stream(reader, writer, lambda push: self._proxy.decisions.subscribe(
                        subscriber=lambda r: push(_record_event(r)), last=start),  # noqa: B023 - _stream calls it now
                        answers=False)
                    return
                if op == "approvals":
                    await self._stream(reader, writer, lambda push: self._proxy.approvals.add_approver(
                        approver=lambda r: push(_approval_event(r))), answers=True)
                    return
                await _write(writer, self._answer(op, message))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    def _answer(self, op: object, message: JsonObject) -> JsonObject:
        try:
            if op == "get_policy":
                return {"ok": True, "policy": policy_to_json(self._proxy.policy)}
            if op == "set_policy":
                policy = policy_from_json(message.get("policy"))
                cut = self._proxy.set_policy(policy=policy)
                return {"ok": True, "policy": policy_to_json(policy), "cut": cut}
            if op == "status":
                status = self.status()
                return {"ok": True, "status": {
                    "pid": status.pid, "uptime_s": status.uptime_s, "open_connections": status.open_connections,
                    "mode": str(status.mode), "pending_approvals": status.pending_approvals}}
            raise InvalidInput(f"unknown control operation {op!r}",
                               hint="one of: get_policy, set_policy, status, subscribe, approvals")
        except AgentboxError as exc:
            return _error(exc)

    async def _stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        register: Callable[[Callable[[JsonObject], None]], Callable[[], None]], *, answers: bool,
    ) -> None:
        """Send events through one queue (so lines never interleave) until the client leaves;
        on an approvals stream, also take answers."""
        queue: asyncio.Queue[JsonObject] = asyncio.Queue(maxsize=_STREAM_BACKLOG)

        def push(event: JsonObject) -> None:
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                log.warning("control client fell behind; disconnecting it")
                writer.transport.abort()

        await _write(writer, {"ok": True})
        unregister = register(push)
        sender = asyncio.create_task(_send_all(queue, writer))
        try:
            while message := await _read_message(reader, writer):
                push(self._answer_approval(message) if answers else _error(
                    InvalidInput("a subscription takes no requests; open another connection")))
        finally:
            unregister()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender

    def _answer_approval(self, message: JsonObject) -> JsonObject:
        request_id = str(message.get("id", ""))
        if message.get("op") != "answer":
            return {"event": "answered", "id": request_id, "ok": False, "error": "expected op \"answer\""}
        try:
            verdict = ApprovalVerdict(str(message.get("verdict")))
        except ValueError:
            return {"event": "answered", "id": request_id, "ok": False,
                    "error": "verdict must be allow_once, allow_always or deny"}
        done = self._proxy.approvals.answer(request_id=request_id, verdict=verdict)
        return {"event": "answered", "id": request_id, "ok": done,
                **({} if done else {"error": "no such pending request (answered or expired)"})}


async def _read_message(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> JsonObject | None:
    """The next JSON object, None at the end; malformed lines are answered and skipped."""
    while True:
        try:
            line = await reader.readline()
        except ValueError:  # longer than MAX_LINE_BYTES: the stream cannot be resynchronised
            await _write(writer, _error(InvalidInput("control message too long")))
            return None
        if not line:
            return None
        if not line.strip():
            continue
        try:
            message: Any = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            await _write(writer, _error(InvalidInput("control message is not valid JSON")))
            continue
        if isinstance(message, dict):
            return message
        await _write(writer, _error(InvalidInput("control message must be a JSON object")))


async def _send_all(queue: asyncio.Queue[JsonObject], writer: asyncio.StreamWriter) -> None:
    while True:
        await _write(writer, await queue.get())


async def _write(writer: asyncio.StreamWriter, message: JsonObject) -> None:
    writer.write(dump_line(message))
    await writer.drain()


def _error(exc: AgentboxError) -> JsonObject:
    kind = "invalid_input" if isinstance(exc, InvalidInput) else "error"
    return {"ok": False, "error": exc.message, "hint": exc.hint, "kind": kind}


def _record_event(record: ConnectionRecord) -> JsonObject:
    return {"event": "record", "record": record_to_json(record)}


def _approval_event(request: ApprovalRequest) -> JsonObject:
    return {"event": "approval", "request": approval_to_json(request)}
