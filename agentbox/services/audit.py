"""Reading and appending a workspace's audit log (the chain itself lives in agentbox.audit)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from agentbox.audit import (
    Anchor,
    AuditLog,
    AuditRecord,
    TrailVerdict,
    VerifyResult,
    follow_records,
    read_records,
    utc_now,
    verify_chain,
    verify_trail,
)
from agentbox.config.paths import AppPaths
from agentbox.errors import NotFound
from agentbox.model.names import validate_workspace_name
from agentbox.model.progress import CancelToken
from agentbox.model.receipt import Receipt
from agentbox.stores.receipts import ReceiptStore
from agentbox.stores.records import RecordStore


def find_audit_log(*, paths: AppPaths, name: str) -> Path:
    """The log of workspace `name`, which outlives the workspace unless destroyed with --purge."""
    validate_workspace_name(name)
    path = paths.audit_log(name)
    if not path.is_file():
        if os.path.ismount(path.parent):  # e.g. a tmpfs over it: a log beneath would be hidden, not gone
            raise NotFound(f"no audit log for workspace {name!r} in {path.parent}",
                           hint=f"{path.parent} is a mount point: a log written before it was mounted is hidden "
                                "beneath it (unmount it to see that one)")
        raise NotFound(f"no audit log for workspace {name!r}",
                       hint="agentbox list shows your workspaces; a log starts when a workspace is created "
                            "and is kept after destroy unless --purge was given")
    return path


class AuditService:
    """The audit logs by workspace name; needs the data dir alone (no settings, no hypervisor)."""

    def __init__(self, *, paths: AppPaths, clock: Callable[[], datetime] = utc_now) -> None:
        self._paths = paths
        self._clock = clock

    def log_path(self, *, name: str) -> Path:
        """Where the log is or will be (it may not exist yet)."""
        return self._paths.audit_log(name)

    def find(self, *, name: str) -> Path:
        """The existing log of `name`; NotFound (with a hint) when there is none."""
        return find_audit_log(paths=self._paths, name=name)

    def records(self, *, name: str, since: datetime | None = None) -> Iterator[AuditRecord]:
        return read_records(path=self.find(name=name), since=since)

    def follow(self, *, name: str, cancel: CancelToken, since: datetime | None = None, poll_s: float = 0.5,
               stop: Callable[[], bool] | None = None) -> Iterator[AuditRecord]:
        """The records so far, then new ones as they come; waits for a log that is not there yet."""
        validate_workspace_name(name)
        return follow_records(path=self._paths.audit_log(name), cancel=cancel, since=since, poll_s=poll_s,
                              stop=stop)

    def verify(self, *, name: str) -> VerifyResult:
        """The chain, its anchors, and the head each receipt holds (which outlives the anchors file)."""
        path = self.find(name=name)
        heads = [anchor for receipt in ReceiptStore(paths=self._paths).readable(name=name)
                 if (anchor := _anchor_of(receipt)) is not None]
        return verify_chain(path=path, vouchers=heads)

    def verify_trail(self, *, name: str) -> TrailVerdict:
        """The decision trail (`net.jsonl`), against the heads the audit log noted for it."""
        path = self.find(name=name)
        records = ((r.event, r.details, r.ts) for r in read_records(path=path))
        return verify_trail(path=RecordStore(paths=self._paths).files(name=name).net_log, audit_records=records)

    def append(self, *, name: str, event: str, details: Mapping[str, Any] | None = None) -> AuditRecord:
        return AuditLog(path=self._paths.audit_log(name), clock=self._clock).append(event=event, details=details)


def _anchor_of(receipt: Receipt) -> Anchor | None:
    """The receipt's audit head as an anchor; None for receipts from before heads (or damaged:
    `agentbox receipts` names those)."""
    if receipt.audit_head is None:
        return None
    try:
        ended = datetime.fromisoformat(receipt.ended)
    except ValueError:
        return None
    return Anchor(seq=receipt.audit_head.seq, hash=receipt.audit_head.hash, ts=ended, why=f"receipt {receipt.id}")
