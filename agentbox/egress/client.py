"""A synchronous client for the control socket (see control.py for the protocol), for the
services, CLI and TUI: plain blocking sockets with timeouts, one connection per call, and
one long-lived connection per subscription or approval stream."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from agentbox.egress.approvals import ApprovalRequest, ApprovalVerdict
from agentbox.egress.control import MAX_LINE_BYTES, EgressStatus
from agentbox.egress.records import ConnectionRecord
from agentbox.egress.wire import JsonObject, approval_from_json, dump_line, policy_from_json, policy_to_json, \
    record_from_json
from agentbox.errors import EgressError, InvalidInput
from agentbox.model.network import NetworkMode, NetworkPolicy


@dataclass(frozen=True)
class PolicyChange:
    policy: NetworkPolicy  # the policy now in force
    cut: int  # open connections it closed


class _Channel:
    """One connection speaking JSON lines."""

    def __init__(self, *, path: Path, timeout: float) -> None:
        self._path = path
        self._buffer = b""
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(path))
        except OSError as exc:
            self._sock.close()
            raise EgressError(f"the egress proxy is not running (no control socket at {path})",
                              hint="start the workspace again to restart its egress proxy") from exc

    def send(self, message: JsonObject) -> None:
        try:
            self._sock.sendall(dump_line(message))
        except OSError as exc:
            raise EgressError(f"lost the egress control connection ({exc})") from exc

    def receive(self, *, timeout: float | None) -> JsonObject | None:
        """The next message; None if none arrived within `timeout`. EgressError at the end."""
        self._sock.settimeout(timeout)
        while b"\n" not in self._buffer:
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                return None
            except OSError as exc:
                raise EgressError(f"lost the egress control connection ({exc})") from exc
            if not chunk:
                raise EgressError("the egress proxy closed the control connection")
            self._buffer += chunk
            if len(self._buffer) > MAX_LINE_BYTES:
                raise EgressError("the egress proxy sent an oversized message")
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message: Any = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EgressError("the egress proxy sent a malformed message") from exc
        return message if isinstance(message, dict) else {}

    def close(self) -> None:
        self._sock.close()


def _checked(message: JsonObject | None, *, timeout: float) -> JsonObject:
    if message is None:
        raise EgressError(f"the egress proxy did not answer within {timeout:g} s")
    if not message.get("ok"):
        error, hint = str(message.get("error", "unknown error")), message.get("hint")
        if message.get("kind") == "invalid_input":
            raise InvalidInput(error, hint=hint)
        raise EgressError(f"the egress proxy refused: {error}", hint=hint)
    return message


class EgressControlClient:
    def __init__(self, *, socket_path: Path, timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def get_policy(self) -> NetworkPolicy:
        return policy_from_json(self._call({"op": "get_policy"})["policy"])

    def set_policy(self, *, policy: NetworkPolicy) -> PolicyChange:
        answer = self._call({"op": "set_policy", "policy": policy_to_json(policy)})
        return PolicyChange(policy=policy_from_json(answer["policy"]), cut=int(answer["cut"]))

    def status(self) -> EgressStatus:
        data = self._call({"op": "status"})["status"]
        return EgressStatus(pid=int(data["pid"]), uptime_s=float(data["uptime_s"]),
                            open_connections=int(data["open_connections"]), mode=NetworkMode(data["mode"]),
                            pending_approvals=int(data["pending_approvals"]))

    def subscribe(self, *, last: int = 0) -> RecordStream:
        """Decision records as they happen, the `last` most recent ones first."""
        return RecordStream(channel=self._open({"op": "subscribe", "last": last}))

    def approvals(self) -> ApprovalStream:
        """Become an approver: receive held requests and answer them."""
        return ApprovalStream(channel=self._open({"op": "approvals"}), timeout=self.timeout)

    def _call(self, message: JsonObject) -> JsonObject:
        channel = _Channel(path=self.socket_path, timeout=self.timeout)
        try:
            channel.send(message)
            return _checked(channel.receive(timeout=self.timeout), timeout=self.timeout)
        finally:
            channel.close()

    def _open(self, message: JsonObject) -> _Channel:
        channel = _Channel(path=self.socket_path, timeout=self.timeout)
        try:
            channel.send(message)
            _checked(channel.receive(timeout=self.timeout), timeout=self.timeout)
        except BaseException:
            channel.close()
            raise
        return channel


class _Stream:
    def __init__(self, *, channel: _Channel) -> None:
        self._channel = channel

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class RecordStream(_Stream):
    def next(self, *, timeout: float | None = None) -> ConnectionRecord | None:
        """The next record, or None if none came within `timeout` (None: wait for ever)."""
        while True:
            message = self._channel.receive(timeout=timeout)
            if message is None:
                return None
            if message.get("event") == "record":
                return record_from_json(message["record"])

    def __enter__(self) -> RecordStream:
        return self


class ApprovalStream(_Stream):
    def __init__(self, *, channel: _Channel, timeout: float) -> None:
        super().__init__(channel=channel)
        self._timeout = timeout
        self._waiting: list[ApprovalRequest] = []  # requests that arrived while awaiting an ack

    def next_request(self, *, timeout: float | None = None) -> ApprovalRequest | None:
        """The next held request, or None if none came within `timeout`."""
        if self._waiting:
            return self._waiting.pop(0)
        while True:
            message = self._channel.receive(timeout=timeout)
            if message is None:
                return None
            if message.get("event") == "approval":
                return approval_from_json(message["request"])

    def answer(self, *, request_id: str, verdict: ApprovalVerdict) -> bool:
        """Answer a request; False when it is no longer pending (answered elsewhere, expired)."""
        self._channel.send({"op": "answer", "id": request_id, "verdict": str(verdict)})
        while True:
            message = self._channel.receive(timeout=self._timeout)
            if message is None:
                raise EgressError(f"the egress proxy did not acknowledge the answer within {self._timeout:g} s")
            if message.get("event") == "approval":
                self._waiting.append(approval_from_json(message["request"]))
            elif message.get("event") == "answered" and message.get("id") == request_id:
                return bool(message.get("ok"))

    def __enter__(self) -> ApprovalStream:
        return self
