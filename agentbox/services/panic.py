"""The panic button: cut the network at once, freeze the guest, keep what it held as
evidence, then reset it to clean.

The order is the point. The cut comes first and takes no lock: whatever else agentbox is
doing with the workspace, nothing may wait before the guest loses its way out (the proxy
closes every open connection when the mode goes to off, and the mode stays off after the
reset: turning it back on is the user's decision). Then the vCPUs stop, so the evidence is
one moment of the guest, not a guest racing the copy. The evidence (RAM and disk) goes to
files outside the workspace's disk, which neither a reset nor a destroy touches. Last, the
session ends with its receipt (reason "panic") and the workspace is reset.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from agentbox.audit import record_anchor
from agentbox.backends.base import DomainState
from agentbox.errors import AgentboxError
from agentbox.host.locks import workspace_lock
from agentbox.model.evidence import EVIDENCE_EVENT, EVIDENCE_REMOVED_EVENT, PANIC_EVENT, Evidence, EvidenceFile
from agentbox.model.evidence import StoredEvidence
from agentbox.model.network import AllowEntry, NetworkMode, NetworkPolicy
from agentbox.model.progress import CancelToken, Progress, ProgressCallback
from agentbox.services.context import ServiceContext
from agentbox.services.evidence_restore import RestoredEvidence, restore_evidence
from agentbox.services.lookup import load_ready_record
from agentbox.services.network import NetworkService
from agentbox.services.sessions import SessionService
from agentbox.services.snapshots import RestoreOutcome, SnapshotService
from agentbox.stores.evidence import EvidenceStore, file_digest
from agentbox.stores.records import WorkspaceRecord

LOCK_WAIT_S = 120.0  # a command holding the workspace (a reset, say) is waited for, after the cut
STEPS = 4


@dataclass(frozen=True)
class PanicOutcome:
    evidence: Evidence | None  # None: the workspace was not running (nothing in RAM to keep)
    cut: int  # connections closed by the cut
    cut_s: float  # from the panic to the network cut
    clean_s: float  # from the panic to the workspace reset
    reset: RestoreOutcome | None
    receipt: str  # the session's receipt id ("" without a session)


class PanicService:
    def __init__(self, *, ctx: ServiceContext, network: NetworkService, sessions: SessionService,
                 snapshots: SnapshotService) -> None:
        self._ctx = ctx
        self._network = network
        self._sessions = sessions
        self._snapshots = snapshots

    def evidence_store(self) -> EvidenceStore:
        return EvidenceStore(paths=self._ctx.paths, storage_dir=self._ctx.settings.storage_dir)

    def panic(self, *, name: str, on_progress: ProgressCallback, cancel: CancelToken | None = None) -> PanicOutcome:
        ctx = self._ctx
        started = time.monotonic()
        record = load_ready_record(ctx=ctx, name=name)
        before = self._network.policy(name=name)
        on_progress(Progress(step="network", detail="cutting the network", index=1, total=STEPS))
        cut, how = self._cut(record=record, allowlist=before.allowlist)
        cut_s = time.monotonic() - started
        ctx.audit(name=name).append(event=PANIC_EVENT, details={
            "mode_before": before.mode.value, "cut": cut, "cut_s": round(cut_s, 3), "how": how})
        with workspace_lock(paths=ctx.paths, name=name, wait_s=LOCK_WAIT_S):
            evidence = self._freeze_and_keep(record=record, cut=cut, on_progress=on_progress)
        on_progress(Progress(step="reset", detail="ending the session and resetting to clean", index=4, total=STEPS))
        cancel = cancel or CancelToken()
        receipt, outcome = "", None
        if self._sessions.current(name=name) is not None:
            ended = self._sessions.end(name=name, reason="panic", force_reset=True, on_progress=on_progress,
                                       cancel=cancel)
            if ended is not None:
                receipt, outcome = (ended.receipt.id if ended.receipt else ""), ended.reset
        if outcome is None:
            outcome = self._snapshots.reset(name=name, on_progress=on_progress, cancel=cancel)
        return PanicOutcome(evidence=evidence, cut=cut, cut_s=cut_s, clean_s=time.monotonic() - started,
                            reset=outcome, receipt=receipt)

    def _cut(self, *, record: WorkspaceRecord, allowlist: tuple[AllowEntry, ...]) -> tuple[int, str]:
        """Mode off through the proxy (it closes what is open); if the proxy cannot take it,
        the policy file says off and the workspace's egress processes are stopped: either
        way nothing gets out."""
        try:
            return self._network.set_mode(name=record.name, mode=NetworkMode.OFF.value).cut, "policy"
        except AgentboxError:
            files = self._ctx.records.files(name=record.name)
            off = NetworkPolicy(mode=NetworkMode.OFF, allowlist=allowlist)
            self._network.write_policy(name=record.name, policy=off)
            self._ctx.egress.stop(files=files)
            return 0, "egress stopped"

    def remove_evidence(self, *, name: str, evidence_id: str) -> Evidence:
        store = self.evidence_store()
        evidence = store.get(name=name, evidence_id=evidence_id, verify=False).evidence
        store.remove(evidence=evidence)
        self._ctx.audit(name=name).append(event=EVIDENCE_REMOVED_EVENT, details={"evidence": evidence.id})
        return evidence

    def evidence(self, *, name: str) -> tuple[Evidence, ...]:
        return self.evidence_store().list(name=name)

    def restore_evidence(self, *, name: str, evidence_id: str, as_name: str, on_progress: ProgressCallback,
                         cancel: CancelToken) -> RestoredEvidence:
        """The evidence's disk booted in a new workspace `as_name`, network off for good."""
        return restore_evidence(ctx=self._ctx, store=self.evidence_store(), name=name, evidence_id=evidence_id,
                                as_name=as_name, on_progress=on_progress, cancel=cancel)

    def verify_evidence(self, *, name: str, evidence_id: str) -> StoredEvidence:
        return self.evidence_store().get(name=name, evidence_id=evidence_id, verify=True)

    def _freeze_and_keep(self, *, record: WorkspaceRecord, cut: int, on_progress: ProgressCallback) -> Evidence | None:
        ctx, name = self._ctx, record.name
        info = ctx.backend.get(name=record.domain)
        if info is None or info.state not in (DomainState.RUNNING, DomainState.PAUSED):
            return None
        on_progress(Progress(step="pause", detail="freezing the guest", index=2, total=STEPS))
        ctx.backend.pause(name=record.domain)
        taken = ctx.clock()
        evidence_id = taken.strftime("%Y%m%dt%H%M%S").lower() + "-" + secrets.token_hex(3)
        store = self.evidence_store()
        if not ctx.backend.capabilities_of(name=record.domain).evidence:
            return self._record(Evidence(
                id=evidence_id, workspace=name, taken=_iso(taken), memory=None, disk=None, network_cut=cut,
                audit_head=ctx.audit(name=name).head(),
                problem="this backend cannot save a guest's RAM and disk: only the cut and the reset happened"))
        directory = store.files_dir(name=name, evidence_id=evidence_id)
        on_progress(Progress(step="evidence", detail=f"saving the guest's RAM and disk to {directory}",
                             index=3, total=STEPS))
        memory, disk = directory / "memory.elf", directory / "disk.qcow2"
        try:
            directory.mkdir(parents=True, mode=0o711)  # the hypervisor writes the files in it
            ctx.backend.save_evidence(name=record.domain, memory=memory, disk=disk)
            kept = [_kept(path) for path in (memory, disk)]
            directory.chmod(0o700)  # the hypervisor is done with it
        except (AgentboxError, OSError) as exc:
            problem = exc.message if isinstance(exc, AgentboxError) else f"{exc.strerror or exc}"
            store.remove(evidence=Evidence(id=evidence_id, workspace=name, taken="", memory=None, disk=None,
                                           audit_head=None, network_cut=cut))
            return self._record(Evidence(id=evidence_id, workspace=name, taken=_iso(taken), memory=None, disk=None,
                                         audit_head=ctx.audit(name=name).head(), network_cut=cut,
                                         problem=f"the evidence could not be saved: {problem}"))
        return self._record(Evidence(id=evidence_id, workspace=name, taken=_iso(taken), memory=kept[0], disk=kept[1],
                                     audit_head=ctx.audit(name=name).head(), network_cut=cut))

    def _record(self, evidence: Evidence) -> Evidence:
        log = self._ctx.audit(name=evidence.workspace)
        self.evidence_store().save(evidence=evidence)
        log.append(event=EVIDENCE_EVENT, details={
            "evidence": evidence.id, "files": {os.path.basename(f.path): f.sha256 for f in evidence.files},
            "bytes": sum(f.bytes for f in evidence.files),
            **({"problem": evidence.problem} if evidence.problem else {})})
        record_anchor(log=log, why=f"evidence {evidence.id}")
        return evidence


def _kept(path: os.PathLike[str] | str) -> EvidenceFile:
    os.chmod(path, 0o600)  # written by the hypervisor; only agentbox's user reads it from now on
    return EvidenceFile(path=str(path), bytes=os.stat(path).st_size, sha256=file_digest(path))  # type: ignore[arg-type]


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds")
