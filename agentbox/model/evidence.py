"""Evidence: what a workspace held when someone pressed the panic button, kept for inspection."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from agentbox.model.audit_head import AuditHead

PANIC_EVENT = "panic"
EVIDENCE_EVENT = "panic.evidence"
EVIDENCE_REMOVED_EVENT = "evidence.removed"
EVIDENCE_RESTORED_EVENT = "evidence.restored"  # on both workspaces: the one it came from, the inspection one


class EvidenceIntegrity(StrEnum):
    MATCHES = "matches"  # every file's SHA-256 is the one the audit log holds
    DIFFERS = "differs"  # a file changed since it was saved
    MISSING = "missing"  # a file is gone
    UNCHECKED = "unchecked"  # not hashed again (listing; `evidence NAME --verify` hashes)


@dataclass(frozen=True)
class EvidenceFile:
    path: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Evidence:
    id: str
    workspace: str
    taken: str  # ISO 8601 UTC, when the guest was frozen
    memory: EvidenceFile | None  # the guest's RAM, an ELF core (None: not saved, see `problem`)
    disk: EvidenceFile | None  # a point-in-time copy of its root disk, qcow2
    audit_head: AuditHead | None  # the log's head when the evidence was saved
    network_cut: int  # connections the cut closed
    problem: str = ""  # why something could not be kept

    @property
    def files(self) -> tuple[EvidenceFile, ...]:
        return tuple(f for f in (self.memory, self.disk) if f is not None)


@dataclass(frozen=True)
class StoredEvidence:
    evidence: Evidence
    integrity: EvidenceIntegrity
