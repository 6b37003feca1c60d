"""JSON forms of policies, decision records and approval requests: the policy file, the
JSONL decision log and the control protocol all use these, so they cannot drift apart."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from agentbox.audit.segments import rotate_by_rename
from agentbox.egress.approvals import ApprovalRequest
from agentbox.egress.policy import Decision
from agentbox.egress.records import ConnectionRecord, Outcome
from agentbox.errors import InvalidInput
from agentbox.model.network import NetworkPolicy, parse_policy

JsonObject = dict[str, Any]
# The decision log rotates like the audit log, but keeps only the newest segments: the audit
# log has every decision too (hash-chained), this one is for looking at recent traffic.
NET_LOG_ROTATE_BYTES = 8 << 20
NET_LOG_SEGMENTS = 4


def policy_to_json(policy: NetworkPolicy) -> JsonObject:
    return {"mode": str(policy.mode), "allowlist": list(policy.render())}


def policy_from_json(data: object) -> NetworkPolicy:
    """Validate a policy object: {"mode": "...", "allowlist": ["...", ...]}."""
    if not isinstance(data, dict) or not isinstance(data.get("mode"), str):
        raise InvalidInput("a policy needs a \"mode\" (off, allowlist, learn or open)",
                           hint='for example: {"mode": "allowlist", "allowlist": ["pypi.org"]}')
    allowlist = data.get("allowlist", [])
    if not isinstance(allowlist, list):
        raise InvalidInput("the policy's \"allowlist\" must be a list of entries")
    return parse_policy(mode=data["mode"], allowlist=allowlist)


def record_to_json(record: ConnectionRecord) -> JsonObject:
    return {
        "time": record.time, "host": record.host, "address": record.address, "port": record.port,
        "method": record.method, "allowed": record.decision.allowed, "rule": record.decision.rule,
        "reason": record.decision.reason, "outcome": str(record.outcome), "bytes_up": record.bytes_up,
        "bytes_down": record.bytes_down, "duration_s": record.duration_s, "error": record.error,
    }


def record_from_json(data: JsonObject) -> ConnectionRecord:
    return ConnectionRecord(
        time=data["time"], host=data["host"], address=data["address"], port=int(data["port"]),
        method=data["method"], decision=Decision(bool(data["allowed"]), data["rule"], data["reason"]),
        outcome=Outcome(data["outcome"]), bytes_up=int(data["bytes_up"]), bytes_down=int(data["bytes_down"]),
        duration_s=float(data["duration_s"]), error=data.get("error", ""),
    )


def approval_to_json(request: ApprovalRequest) -> JsonObject:
    return {"id": request.id, "time": request.time, "host": request.host, "address": request.address,
            "port": request.port, "method": request.method}


def approval_from_json(data: JsonObject) -> ApprovalRequest:
    return ApprovalRequest(id=str(data["id"]), time=data["time"], host=data["host"], address=data["address"],
                           port=int(data["port"]), method=data["method"])


def dump_line(data: JsonObject) -> bytes:
    return (json.dumps(data, separators=(",", ":"), sort_keys=True) + "\n").encode()


class JsonlSink:
    """Appends each record as one JSON line to an owner-only file (a RecordSink). Past
    `rotate_bytes` the file becomes the newest of at most `keep` segments (see agentbox.audit.segments)."""

    def __init__(self, *, path: Path, rotate_bytes: int = NET_LOG_ROTATE_BYTES, keep: int = NET_LOG_SEGMENTS) -> None:
        self.path = path
        self._rotate_bytes, self._keep = rotate_bytes, keep
        self._lock = threading.Lock()
        self._open()

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(fd).st_size
        self._file = os.fdopen(fd, "ab")

    def __call__(self, record: ConnectionRecord) -> None:
        line = dump_line(record_to_json(record))
        with self._lock:
            if self._size >= self._rotate_bytes:
                self._file.close()
                rotate_by_rename(path=self.path, keep=self._keep)
                self._open()
            self._file.write(line)
            self._file.flush()
            self._size += len(line)

    def close(self) -> None:
        with self._lock:
            self._file.close()
