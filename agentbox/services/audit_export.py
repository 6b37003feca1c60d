"""One file that carries a workspace's whole trail elsewhere, and its check there.

The bundle (a .tar.gz) is laid out as a small data dir: `data/audit/NAME.jsonl` with its
segments and anchors, the decision trail, the receipts, the recordings and the evidence
manifests (not the evidence itself: RAM and disk copies are gigabytes; `--with-evidence`
adds them). `MANIFEST.json` holds each file's SHA-256 and what verification said when the
bundle was made. Checking a bundle unpacks it into a fresh directory and runs the same
verification agentbox runs on its own data dir, so there is one definition of "intact".
A bundle proves what the files say only as far as the chain does: whoever can rewrite the
data dir before the export can rewrite the bundle too; a receipt or bundle kept elsewhere
is what catches that.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath

from agentbox.audit import TrailVerdict, VerifyResult, log_files, utc_now
from agentbox.audit.anchors import anchors_path
from agentbox.config.paths import AppPaths
from agentbox.errors import AgentboxError, InvalidInput
from agentbox.model.evidence import Evidence
from agentbox.model.receipt import Integrity
from agentbox.model.recording import RecordingIntegrity
from agentbox.services.audit import AuditService
from agentbox.stores.evidence import EvidenceStore
from agentbox.stores.receipts import ReceiptStore
from agentbox.stores.recordings import RecordingStore
from agentbox.stores.records import RecordStore

BUNDLE_FORMAT = 1
MANIFEST = "MANIFEST.json"
_DATA = PurePosixPath("data")


@dataclass(frozen=True)
class ExportedBundle:
    path: Path
    files: int
    bytes: int
    intact: bool  # the audit log and the decision trail verified when the bundle was made


@dataclass(frozen=True)
class BundleCheck:
    workspace: str
    made: str  # when the bundle was made
    files: int
    changed: tuple[str, ...]  # files whose SHA-256 differs from the manifest's, or that are missing
    unlisted: tuple[str, ...]  # files in the bundle the manifest does not name
    audit: VerifyResult  # on the unpacked copy (its paths name a directory that is gone: see `unpacked`)
    trail: TrailVerdict
    receipts_not_vouched: tuple[str, ...]  # receipt ids whose SHA-256 the log does not hold
    recordings_not_vouched: tuple[str, ...]
    unpacked: Path  # where it was unpacked for the check (removed since)

    @property
    def intact(self) -> bool:
        return (not self.changed and not self.unlisted and self.audit.intact and self.trail.intact
                and not self.receipts_not_vouched and not self.recordings_not_vouched)


class AuditBundles:
    """Export and check bundles; needs the data dir alone, like the audit log."""

    def __init__(self, *, paths: AppPaths, clock: Callable[[], datetime] = utc_now) -> None:
        self._paths = paths
        self._clock = clock

    def export(self, *, name: str, out: Path, with_evidence: bool = False) -> ExportedBundle:
        evidence = EvidenceStore(paths=self._paths).list(name=name) if with_evidence else ()
        return export_bundle(paths=self._paths, name=name, out=out, clock=self._clock(), evidence=evidence)

    def check(self, *, path: Path) -> BundleCheck:
        return check_bundle(path=path)


def export_bundle(*, paths: AppPaths, name: str, out: Path, clock: datetime,
                  evidence: tuple[Evidence, ...] = ()) -> ExportedBundle:
    """Write the bundle of workspace `name` to `out` (replaced whole, never half-written)."""
    audit = AuditService(paths=paths)
    log = audit.find(name=name)
    result, trail = audit.verify(name=name), audit.verify_trail(name=name)
    members = _members(paths=paths, name=name, log=log, evidence=evidence)
    manifest = {
        "format": BUNDLE_FORMAT, "workspace": name, "made": clock.isoformat(timespec="seconds"),
        "files": {str(arc): _digest(path) for arc, path in members},
        "verified": {"audit_intact": result.intact, "audit_records": result.records, "audit_head": result.head,
                     "trail_intact": trail.intact},
    }
    data = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    if out.is_dir():
        raise InvalidInput(f"{out} is a directory", hint=f"give a file name, e.g. {out / (name + '-audit.tar.gz')}")
    staging = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        with tarfile.open(staging, "w:gz") as bundle:
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(data), int(clock.timestamp()), 0o600
            bundle.addfile(info, io.BytesIO(data))
            for arc, path in members:
                bundle.add(str(path), arcname=str(arc), recursive=False)
        with staging.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(staging, out)  # whole or not at all
    except OSError as exc:
        raise AgentboxError(f"cannot write the bundle {out}: {exc.strerror or exc}",
                            hint=f"check the free space and the permissions of {out.parent}") from None
    finally:
        staging.unlink(missing_ok=True)
    return ExportedBundle(path=out, files=len(members) + 1, bytes=out.stat().st_size,
                          intact=result.intact and trail.intact)


def check_bundle(*, path: Path) -> BundleCheck:
    """Unpack the bundle at `path` into a fresh directory and verify it there."""
    with tempfile.TemporaryDirectory(prefix="agentbox-bundle-") as scratch:
        root = Path(scratch)
        manifest = _unpack(path=path, into=root)
        name = str(manifest.get("workspace") or "")
        raw = manifest.get("files")
        listed = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
        present = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} - {MANIFEST}
        changed = tuple(sorted(arc for arc, digest in listed.items()
                               if arc not in present or _digest(root / arc) != digest))
        unlisted = tuple(sorted(present - set(listed)))
        paths = AppPaths.under(root=root)
        audit = AuditService(paths=paths)
        result, trail = audit.verify(name=name), audit.verify_trail(name=name)
        receipts = tuple(s.id for s in ReceiptStore(paths=paths).list(name=name)
                         if s.integrity is not Integrity.MATCHES)
        recordings = tuple(s.id for s in RecordingStore(paths=paths).list(name=name)
                           if s.integrity is not RecordingIntegrity.MATCHES)
        return BundleCheck(workspace=name, made=str(manifest.get("made") or ""), files=len(listed), changed=changed,
                           unlisted=unlisted, audit=result, trail=trail, receipts_not_vouched=receipts,
                           recordings_not_vouched=recordings, unpacked=root)


def _members(*, paths: AppPaths, name: str, log: Path,
             evidence: tuple[Evidence, ...]) -> list[tuple[PurePosixPath, Path]]:
    """(name in the bundle, file) for everything the bundle carries, laid out as a data dir."""
    found: list[tuple[PurePosixPath, Path]] = []

    def add(path: Path, under: Path) -> None:
        if path.is_file():
            found.append((_DATA / path.relative_to(under).as_posix(), path))

    data = paths.data_dir
    for path in log_files(log):
        add(path, data)
    add(anchors_path(log), data)
    net_log = RecordStore(paths=paths).files(name=name).net_log
    for path in log_files(net_log):
        add(path, data)
    for directory in (paths.workspace_receipts(name), paths.evidence_dir / name):
        for path in sorted(directory.rglob("*")) if directory.is_dir() else ():
            add(path, data)
    for kept in evidence:
        for file in kept.files:
            found.append((PurePosixPath("evidence") / kept.id / Path(file.path).name, Path(file.path)))
    return found


def _unpack(*, path: Path, into: Path) -> dict[str, object]:
    try:
        with tarfile.open(path, "r:gz") as bundle:
            for member in bundle.getmembers():
                where = PurePosixPath(member.name)
                if not (member.isfile() or member.isdir()) or where.is_absolute() or ".." in where.parts:
                    raise InvalidInput(f"{path} holds {member.name!r}, which is not a plain file inside the bundle",
                                       hint="a bundle agentbox made holds files only, by relative names")
            bundle.extractall(into, filter="data")  # no absolute paths, no .., no links out
        manifest = json.loads((into / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, tarfile.TarError, ValueError) as exc:
        raise InvalidInput(f"{path} is not an agentbox audit bundle: {exc}",
                           hint="agentbox audit export NAME --out FILE makes one") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise InvalidInput(f"{path} is not an agentbox audit bundle (format {BUNDLE_FORMAT})")
    return manifest


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()

