"""The tamper-evident audit trail: one hash-chained JSONL file per workspace.

Low in the layers (stdlib, agentbox.errors and agentbox.model only), so the egress proxy
daemon can append its network decisions beside the services' lifecycle events.
"""

from agentbox.audit.chain import AuditLog
from agentbox.audit.reader import follow_records, read_records
from agentbox.audit.record import GENESIS, TORN_TAIL_EVENT, AuditRecord, utc_now
from agentbox.audit.verify import BreakKind, ChainBreak, RecoveredDamage, VerifyResult, verify_chain

__all__ = [
    "GENESIS",
    "TORN_TAIL_EVENT",
    "AuditLog",
    "AuditRecord",
    "BreakKind",
    "ChainBreak",
    "RecoveredDamage",
    "VerifyResult",
    "follow_records",
    "read_records",
    "utc_now",
    "verify_chain",
]
