"""Stored evidence: the files (the guest's RAM and disk copy) in the storage dir, where the
hypervisor can write them (`storage_dir/evidence/NAME/ID/`), and a manifest beside the
receipts (`data_dir/evidence/NAME/ID.json`) naming each file with its SHA-256, which the
`panic.evidence` audit record holds too. Reset and destroy leave both alone; `evidence rm`
or `destroy --purge` remove them."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path

from agentbox.config.atomic_file import write_atomically
from agentbox.config.paths import AppPaths
from agentbox.errors import AgentboxError, InvalidInput, NotFound
from agentbox.model.audit_head import AuditHead
from agentbox.model.evidence import Evidence, EvidenceFile, EvidenceIntegrity, StoredEvidence
from agentbox.model.names import validate_workspace_name

_ID = re.compile(r"^[0-9a-z-]{4,40}$")


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class EvidenceStore:
    def __init__(self, *, paths: AppPaths, storage_dir: Path | None = None) -> None:
        """`storage_dir`: where the files are made (None: only read what the manifests say)."""
        self._paths = paths
        self._storage = storage_dir / "evidence" if storage_dir is not None else None

    def files_dir(self, *, name: str, evidence_id: str) -> Path:
        if self._storage is None:
            raise AgentboxError("no storage dir: evidence files cannot be made or removed here")
        return self._storage / name / evidence_id

    def save(self, *, evidence: Evidence) -> Path:
        path = self._manifest_dir(evidence.workspace) / f"{evidence.id}.json"
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomically(path=path, data=(json.dumps(asdict(evidence), indent=2, sort_keys=True) + "\n").encode())
        except OSError as exc:
            raise AgentboxError(f"cannot write the evidence manifest {path}: {exc.strerror or exc}",
                                hint=f"check the free space and the permissions of {path.parent}") from None
        return path

    def list(self, *, name: str) -> tuple[Evidence, ...]:
        validate_workspace_name(name)
        directory = self._manifest_dir(name)
        found = [self._load(p) for p in sorted(directory.glob("*.json"))] if directory.is_dir() else []
        return tuple(sorted(found, key=lambda e: e.taken))

    def get(self, *, name: str, evidence_id: str, verify: bool = True) -> StoredEvidence:
        validate_workspace_name(name)
        if not _ID.match(evidence_id):
            raise InvalidInput(f"{evidence_id!r} is not an evidence id", hint=f"agentbox evidence {name} lists them")
        matches = [e for e in self.list(name=name) if e.id.startswith(evidence_id)]
        if len(matches) != 1:
            raise (NotFound(f"workspace {name!r} has no evidence {evidence_id!r}",
                            hint=f"agentbox evidence {name} lists it") if not matches else
                   InvalidInput(f"{evidence_id!r} matches {len(matches)} evidence sets", hint="give more of the id"))
        evidence = matches[0]
        return StoredEvidence(evidence=evidence, integrity=self.integrity(evidence) if verify
                              else EvidenceIntegrity.UNCHECKED)

    def integrity(self, evidence: Evidence) -> EvidenceIntegrity:
        for kept in evidence.files:
            path = Path(kept.path)
            if not path.exists():
                return EvidenceIntegrity.MISSING
            if file_digest(path) != kept.sha256:
                return EvidenceIntegrity.DIFFERS
        return EvidenceIntegrity.MATCHES

    def remove(self, *, evidence: Evidence) -> None:
        for kept in evidence.files:  # where the manifest says, wherever the storage dir is now
            Path(kept.path).unlink(missing_ok=True)
        shutil.rmtree(self.files_dir(name=evidence.workspace, evidence_id=evidence.id), ignore_errors=True)
        (self._manifest_dir(evidence.workspace) / f"{evidence.id}.json").unlink(missing_ok=True)

    def purge(self, *, name: str) -> None:
        if self._storage is not None:
            shutil.rmtree(self._storage / name, ignore_errors=True)
        shutil.rmtree(self._manifest_dir(name), ignore_errors=True)

    def _manifest_dir(self, name: str) -> Path:
        return self._paths.evidence_dir / name / "panic"

    def _load(self, path: Path) -> Evidence:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            head = raw.get("audit_head")
            return Evidence(
                id=str(raw["id"]), workspace=str(raw["workspace"]), taken=str(raw["taken"]),
                memory=EvidenceFile(**raw["memory"]) if raw.get("memory") else None,
                disk=EvidenceFile(**raw["disk"]) if raw.get("disk") else None,
                audit_head=AuditHead(**head) if head else None, network_cut=int(raw.get("network_cut") or 0),
                problem=str(raw.get("problem") or ""))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AgentboxError(f"cannot read the evidence manifest {path}: {exc}",
                                hint="it was changed or cut short; the audit log holds what it said") from None
