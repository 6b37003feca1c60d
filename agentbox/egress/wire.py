"""JSON forms of policies, decision records and approval requests: the policy file, the
JSONL decision log and the control protocol all use these, so they cannot drift apart."""

from __future__ import annotations

import json
from typing import Any

from agentbox.egress.approvals import ApprovalRequest
from agentbox.egress.policy import Decision
from agentbox.egress.records import ConnectionRecord, Outcome
from agentbox.errors import InvalidInput
from agentbox.model.network import NetworkPolicy, parse_policy

JsonObject = dict[str, Any]


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
