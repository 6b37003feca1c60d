"""Restoring a panic's evidence into a separate workspace for inspection.

The evidence is only read: its hashes are checked against the audit log first (a restore
of files that changed is refused), the new workspace boots from a byte-for-byte copy of
the evidence disk, and the hashes are checked again afterwards. The new workspace is
marked `inspection`: it is created with the network off and no shares, and the network
service refuses to turn it on (fail closed). It boots cold with a new cloud-init instance
id, so cloud-init gives the guest the new workspace's host key and client key, as on any
first boot, and agentbox can log in although the disk is another workspace's.

The RAM is not restored: it was saved as an ELF core dump (memory only), which is for
analysis with tools such as `crash` or gdb, and cannot be loaded back into a running guest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agentbox.errors import EvidenceChanged, InvalidInput, NotFound
from agentbox.model.evidence import EVIDENCE_RESTORED_EVENT, Evidence, EvidenceIntegrity
from agentbox.model.names import validate_workspace_name
from agentbox.model.progress import CancelToken, ProgressCallback
from agentbox.services.anchoring import anchor_trail
from agentbox.services.context import ServiceContext
from agentbox.services.create import create_from_disk
from agentbox.stores.evidence import EvidenceStore

MEMORY_NOTE = ("the RAM was not restored: memory.elf is an ELF core dump for analysis (crash, gdb), "
               "which cannot be loaded into a running guest; the workspace booted from the evidence disk")


@dataclass(frozen=True)
class RestoredEvidence:
    workspace: str  # the new, network-off workspace
    evidence: Evidence
    integrity_after: EvidenceIntegrity  # the evidence's hashes checked again after the restore
    memory_note: str = MEMORY_NOTE


def restore_evidence(*, ctx: ServiceContext, store: EvidenceStore, name: str, evidence_id: str, as_name: str,
                     on_progress: ProgressCallback, cancel: CancelToken) -> RestoredEvidence:
    validate_workspace_name(name)
    new_name = validate_workspace_name(as_name)
    if new_name == name:
        raise InvalidInput(f"the evidence of {name!r} cannot be restored over {name!r} itself",
                           hint=f"name a new workspace: agentbox evidence {name} --restore {evidence_id} "
                                f"--as {name}-inspect")
    stored = store.get(name=name, evidence_id=evidence_id, verify=True)
    evidence = stored.evidence
    if evidence.disk is None:
        raise InvalidInput(f"evidence {evidence.id} of {name!r} holds no disk ({evidence.problem or 'not saved'})",
                           hint="only evidence with a saved disk can be restored")
    if stored.integrity is not EvidenceIntegrity.MATCHES:
        raise EvidenceChanged(f"evidence {evidence.id} of {name!r} {stored.integrity.value}: its files no longer "
                              "hash to what the audit log recorded; refusing to restore it",
                              hint=f"see agentbox evidence {name} --verify {evidence.id} and "
                                   f"agentbox audit {name}; keep the files as they are for whoever investigates")
    original = ctx.records.load(name=name)
    if original is None:
        raise NotFound(f"workspace {name!r} is gone, and with it the template and resources to restore into",
                       hint="restore evidence before destroying its workspace")
    template = ctx.catalogue.get(name=original.template)
    record = create_from_disk(ctx=ctx, name=new_name, template=template, resources=original.resources,
                              disk=Path(evidence.disk.path), inspection=f"{name}/{evidence.id}",
                              on_progress=on_progress, cancel=cancel)
    after = store.get(name=name, evidence_id=evidence.id, verify=True).integrity
    details = {"evidence": evidence.id, "from": name, "as": record.name, "disk_sha256": evidence.disk.sha256,
               "integrity_after": after.value}
    for workspace in (name, record.name):
        ctx.audit(name=workspace).append(event=EVIDENCE_RESTORED_EVENT, details=details)
    anchor_trail(ctx=ctx, name=record.name, why=f"restored evidence {evidence.id}")
    return RestoredEvidence(workspace=record.name, evidence=evidence, integrity_after=after)
