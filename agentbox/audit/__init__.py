"""The tamper-evident audit trail: one hash-chained JSONL log per workspace (an active file
and the segments rotated out of it, see segments.py).

Low in the layers (stdlib, agentbox.errors and agentbox.model only), so the egress proxy
daemon can append its network decisions beside the services' lifecycle events, and to the
workspace's decision trail (trail.py), a bounded chain of its own anchored in the audit log.
"""

from agentbox.audit.anchors import Anchor, AnchorFile, read_anchors, record_anchor, remove_anchors
from agentbox.audit.chain import ROTATE_BYTES, AuditLog
from agentbox.audit.reader import RecentRecords, follow_records, read_records, tail_records
from agentbox.audit.record import GENESIS, TORN_TAIL_EVENT, AuditRecord, utc_now
from agentbox.audit.segments import log_files, remove_log
from agentbox.audit.trail import (
    DECISION_EVENT,
    HEAD_EVENT,
    TRAIL_ROTATE_BYTES,
    TRAIL_SEGMENTS,
    TrailVerdict,
    decision_details,
    decision_trail,
    set_aside_unchained,
    unchained_path,
    verify_trail,
)
from agentbox.audit.verify import BreakKind, ChainBreak, RecoveredDamage, VerifyResult, verify_chain

__all__ = [
    "DECISION_EVENT",
    "HEAD_EVENT",
    "TRAIL_ROTATE_BYTES",
    "TRAIL_SEGMENTS",
    "TrailVerdict",
    "decision_details",
    "decision_trail",
    "set_aside_unchained",
    "unchained_path",
    "verify_trail",
    "GENESIS",
    "ROTATE_BYTES",
    "Anchor",
    "AnchorFile",
    "TORN_TAIL_EVENT",
    "AuditLog",
    "AuditRecord",
    "BreakKind",
    "ChainBreak",
    "RecentRecords",
    "RecoveredDamage",
    "VerifyResult",
    "follow_records",
    "log_files",
    "read_anchors",
    "read_records",
    "record_anchor",
    "remove_anchors",
    "remove_log",
    "tail_records",
    "utc_now",
    "verify_chain",
]
