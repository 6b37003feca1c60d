"""The stored session receipts of a workspace: one JSON file each, data_dir/receipts/NAME/ID.json,
kept after reset and destroy; a `session.receipt` audit record holds each file's SHA-256, so
a later edit shows when it is read back (services/receipts.py builds them)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path

from agentbox.audit import read_records
from agentbox.config.atomic_file import write_atomically
from agentbox.config.paths import AppPaths
from agentbox.errors import AgentboxError, InvalidInput, NotFound
from agentbox.model.names import validate_workspace_name
from agentbox.model.receipt import Integrity, Receipt, ReceiptSummary, StoredReceipt, receipt_from_json

RECEIPT_EVENT = "session.receipt"
_ID = re.compile(r"^[0-9a-f]{4,32}$")


class ReceiptStore:
    """The stored receipts of a workspace, readable after it is reset or destroyed."""

    def __init__(self, *, paths: AppPaths) -> None:
        self._paths = paths

    def save(self, *, receipt: Receipt) -> tuple[Path, str]:
        """Write the receipt; returns its file and the file's SHA-256."""
        data = json.dumps(asdict(receipt), indent=2, sort_keys=True) + "\n"
        path = self._paths.workspace_receipts(receipt.workspace) / f"{receipt.id}.json"
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomically(path=path, data=data.encode())
        except OSError as exc:
            raise AgentboxError(f"cannot write the session receipt {path}: {exc.strerror or exc}",
                                hint=f"check the free space and the permissions of {path.parent}") from None
        return path, hashlib.sha256(data.encode()).hexdigest()

    def list(self, *, name: str) -> tuple[ReceiptSummary, ...]:
        """Oldest first. An unreadable file is listed with its problem, never skipped."""
        validate_workspace_name(name)
        recorded = self._recorded(name)
        found = []
        for path in sorted(self._paths.workspace_receipts(name).glob("*.json")):
            try:
                stored = self._load(path=path, recorded=recorded)
            except AgentboxError as exc:
                found.append(ReceiptSummary(id=path.stem, started="", ended="", duration_s=0.0, commands=0,
                                            allowed=0, denied=0, integrity=_integrity(path, recorded),
                                            problem=exc.message))
                continue
            r = stored.receipt
            found.append(ReceiptSummary(id=r.id, started=r.started, ended=r.ended, duration_s=r.duration_s,
                                        commands=len(r.commands), allowed=r.connections(allowed=True),
                                        denied=r.connections(allowed=False), integrity=stored.integrity))
        order = {receipt_id: n for n, receipt_id in enumerate(recorded)}  # the log's order: sessions may share a second
        return tuple(sorted(found, key=lambda s: (s.started, order.get(s.id, len(order)), s.id)))

    def get(self, *, name: str, receipt_id: str) -> StoredReceipt:
        """One receipt by its id (or a unique start of it)."""
        validate_workspace_name(name)
        listing = f"agentbox receipts {name} lists them"
        if not _ID.match(receipt_id):
            raise InvalidInput(f"{receipt_id!r} is not a receipt id (4 to 32 hex digits)", hint=listing)
        matches = sorted(self._paths.workspace_receipts(name).glob(f"{receipt_id}*.json"))
        if not matches:
            raise NotFound(f"workspace {name!r} has no receipt {receipt_id!r}", hint=listing)
        if len(matches) > 1:
            raise InvalidInput(f"{receipt_id!r} matches {len(matches)} receipts of {name!r}: "
                               + ", ".join(p.stem for p in matches), hint="give more of the id")
        return self._load(path=matches[0], recorded=self._recorded(name))

    def readable(self, *, name: str) -> tuple[Receipt, ...]:
        """Every receipt file that can be read, by file name, without reading the log (`list`
        names the others)."""
        validate_workspace_name(name)
        found = []
        for path in sorted(self._paths.workspace_receipts(name).glob("*.json")):
            try:
                found.append(receipt_from_json(json.loads(path.read_bytes())))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return tuple(found)

    def _load(self, *, path: Path, recorded: dict[str, str]) -> StoredReceipt:
        damaged = f"compare it with the {RECEIPT_EVENT} record in: agentbox audit {path.parent.name}"
        try:
            data = path.read_bytes()
            receipt = receipt_from_json(json.loads(data))
        except OSError as exc:
            raise AgentboxError(f"cannot read the receipt {path}: {exc.strerror or exc}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise AgentboxError(f"the receipt {path} is damaged ({exc})", hint=damaged) from None
        return StoredReceipt(receipt=receipt, path=path, sha256=hashlib.sha256(data).hexdigest(),
                             integrity=_integrity(path, recorded, data))

    def purge(self, *, name: str) -> None:
        """With `destroy --purge`, which deletes the audit log that vouches for them."""
        shutil.rmtree(self._paths.workspace_receipts(name), ignore_errors=True)

    def _recorded(self, name: str) -> dict[str, str]:
        """receipt id -> SHA-256, from the workspace's audit log (empty when it has none)."""
        try:
            return {str(r.details.get("receipt")): str(r.details.get("sha256"))
                    for r in read_records(path=self._paths.audit_log(name)) if r.event == RECEIPT_EVENT}
        except NotFound:
            return {}


def _integrity(path: Path, recorded: dict[str, str], data: bytes | None = None) -> Integrity:
    if path.stem not in recorded:
        return Integrity.UNRECORDED
    try:
        data = path.read_bytes() if data is None else data
    except OSError:
        return Integrity.DIFFERS
    return Integrity.MATCHES if hashlib.sha256(data).hexdigest() == recorded[path.stem] else Integrity.DIFFERS
