"""Session receipts: what a session did, written when it ends and before the reset wipes it.

Where each part comes from, and how far it can be trusted:
- duration, commands and network: the host's own audit records (`exec`, and the egress
  proxy's `network.decision`) after the session's `session.started` record;
- outbox: the host's listing of the outbox at the end against the one taken at the start
  (the files are the guest's; the listing is the host's);
- files changed in the guest: the guest's own answer to a bounded `find` for files newer
  than the marker the clean snapshot left (agentbox.provision.guest_changes), so untrusted.
  The host cannot compute this itself here: agentbox never reads the guest's disk.

A receipt is one JSON file, data_dir/receipts/NAME/ID.json (ID = the session's id), kept
after reset and destroy. A `session.receipt` audit record holds its SHA-256, so a later edit
of the file shows when it is read back.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from agentbox.audit import AuditRecord, read_records, record_anchor
from agentbox.backends.base import DomainState
from agentbox.config.atomic_file import write_atomically
from agentbox.errors import Cancelled, GuestError, HostKeyMismatch, NotFound
from agentbox.model.progress import CancelToken
from agentbox.model.api_use import ApiUse
from agentbox.model.budget import BudgetLine
from agentbox.model.receipt import (
    CommandRun,
    Destination,
    GuestFile,
    GuestReport,
    GuestStatus,
    OutboxChange,
    OutboxChangeKind,
    OutboxReport,
    Receipt,
    RecordingRef,
)
from agentbox.model.recording import RECORDING_SAVED_EVENT
from agentbox.model.redaction import redact_argv
from agentbox.provision.guest_changes import CHANGES_ARGV, CHANGES_LIMIT, NO_MARK_EXIT
from agentbox.services.anchoring import note_trail_head
from agentbox.services.context import ServiceContext
from agentbox.stores.receipts import RECEIPT_EVENT, ReceiptStore
from agentbox.services.outbox import OutboxEntry, OutboxService
from agentbox.stores.records import WorkspaceRecord
from agentbox.services.ssh_access import ssh_target

GUEST_TIMEOUT_S = 30.0  # a silent guest must not hold up the reset for long
MAX_GUEST_OUTPUT = 1 << 20  # more than CHANGES_LIMIT long paths: the guest is flooding us
OUTBOX_LIMIT = CHANGES_LIMIT
BASELINE_FILE = "session-outbox.json"  # in the workspace dir while its session runs
_KINDS = {"f": "file", "d": "dir", "l": "symlink"}


class ReceiptService:
    """Writes receipts at the session's start (the outbox listing) and end (the receipt)."""

    def __init__(self, *, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def begin(self, *, name: str, session_id: str) -> None:
        """Note the outbox as it is now, for the receipt to compare against."""
        path = self._ctx.records.files(name=name).directory / BASELINE_FILE
        try:
            entries = OutboxService(ctx=self._ctx).list(name=name)
            baseline = {"session": session_id, "entries": [asdict(e) for e in entries]}
            write_atomically(path=path, data=json.dumps(baseline).encode())
        except OSError:  # the guest changed the outbox under the walk: the receipt says it could not compare
            path.unlink(missing_ok=True)

    def finish(self, *, record: WorkspaceRecord, session_id: str, started: str, ended: datetime,
               reason: str, budgets: tuple[BudgetLine, ...] = ()) -> Receipt:
        """Build, store and audit the receipt of the session now ending. Raises only when it
        cannot be stored; a guest that does not answer is reported in the receipt."""
        name = record.name
        note_trail_head(ctx=self._ctx, name=name, why=f"receipt {session_id}")  # the receipt's head covers it
        head = self._ctx.audit(name=name).head()  # before its own record, which holds the file's hash
        records = _session_records(path=self._ctx.paths.audit_log(name), session_id=session_id, started=started)
        receipt = Receipt(
            id=session_id, workspace=name, started=started, ended=ended.isoformat(timespec="seconds"),
            duration_s=(ended - datetime.fromisoformat(started)).total_seconds(), reason=reason,
            commands=_commands(records), network=_network(records), outbox=self._outbox(name, session_id),
            guest=self._guest(record), audit_head=head, recordings=_recordings(records), api=_api(records),
            budgets=budgets)
        path, digest = ReceiptStore(paths=self._ctx.paths).save(receipt=receipt)
        self._ctx.audit(name=name).append(event=RECEIPT_EVENT, details={
            "session": session_id, "receipt": receipt.id, "sha256": digest, "file": str(path)})
        record_anchor(log=self._ctx.audit(name=name), why=f"receipt {receipt.id}")
        return receipt

    def _outbox(self, name: str, session_id: str) -> OutboxReport:
        path = self._ctx.records.files(name=name).directory / BASELINE_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            before = {e["path"]: OutboxEntry(**e) for e in raw["entries"]} if raw["session"] == session_id else None
        except (OSError, ValueError, KeyError, TypeError):
            before = None
        path.unlink(missing_ok=True)
        try:
            after = {e.path: e for e in OutboxService(ctx=self._ctx).list(name=name)}
        except OSError:
            after = {}
        changes = _outbox_changes(before=before or {}, after=after)
        return OutboxReport(compared=before is not None, changes=tuple(changes[:OUTBOX_LIMIT]),
                            truncated=len(changes) > OUTBOX_LIMIT)

    def _guest(self, record: WorkspaceRecord) -> GuestReport:
        ctx = self._ctx
        info = ctx.backend.get(name=record.domain)
        if info is None or info.state is not DomainState.RUNNING:
            return GuestReport(status=GuestStatus.NOT_RUNNING, files=(), truncated=False,
                               detail="the workspace was not running when the session ended: the guest was not asked")
        out, err, stop = bytearray(), bytearray(), CancelToken()

        def collect(chunk: bytes) -> None:
            if len(out) <= MAX_GUEST_OUTPUT:
                out.extend(chunk)
            else:
                stop.cancel()  # ends the command; what came so far is kept

        def keep_tail(chunk: bytes) -> None:
            err[:] = (err + chunk)[-2000:]

        target = ssh_target(record=record, files=ctx.records.files(name=record.name))
        try:
            code = ctx.guest.run_command(target=target, argv=list(CHANGES_ARGV), stdout=collect, stderr=keep_tail,
                                         timeout_s=GUEST_TIMEOUT_S, cancel=stop)
        except Cancelled:
            code = 0
        except HostKeyMismatch as exc:
            return GuestReport(status=GuestStatus.FAILED, files=(), truncated=False,
                               detail=f"the guest was not asked: {exc.message}")
        except GuestError as exc:
            return GuestReport(status=GuestStatus.NO_ANSWER, files=(), truncated=False,
                               detail=f"the guest did not answer ({exc.message}); nothing is known of its files")
        if code == NO_MARK_EXIT:
            return GuestReport(status=GuestStatus.NO_MARKER, files=(), truncated=False, detail=(
                "the guest has no clean-state marker: the workspace was created before receipts existed "
                f"(agentbox reclean {record.name} leaves one) or it has no RAM snapshot (resets cold boot)"))
        if code != 0:
            why = err.decode("utf-8", errors="replace").strip()[-300:]
            return GuestReport(status=GuestStatus.FAILED, files=(), truncated=False,
                               detail=f"the guest's file listing failed (exit {code})" + (f": {why}" if why else ""))
        files, cut = _parse_guest_files(bytes(out), complete=not stop.cancelled)
        return GuestReport(status=GuestStatus.REPORTED, files=files, truncated=cut, detail=(
            f"{len(files)} path(s) on the guest's root file system modified since the clean snapshot"
            + (f" (cut at {len(files)}: the guest reported more)" if cut else "")))


def _session_records(*, path: Path, session_id: str, started: str) -> list[AuditRecord]:
    """The records after this session's `session.started`; by time if that record is missing."""
    since = datetime.fromisoformat(started)
    found, after, by_time = False, [], []
    try:
        for record in read_records(path=path):
            if found:
                after.append(record)
            elif record.event == "session.started" and record.details.get("session") == session_id:
                found = True
            elif record.ts >= since:
                by_time.append(record)
    except NotFound:
        return []
    return after if found else by_time


def _commands(records: list[AuditRecord]) -> tuple[CommandRun, ...]:
    runs = []
    for record in records:
        if record.event != "exec":
            continue
        d = record.details
        argv = d.get("argv")
        # Again here: a log written before exec redacted its records may still hold a key.
        recorded = redact_argv([str(a) for a in argv] if isinstance(argv, list) else [])
        runs.append(CommandRun(at=record.ts.isoformat(timespec="seconds"), argv=recorded.argv,
                               redacted=_int(d.get("redacted")) + recorded.count,
                               exit_code=_int(d.get("exit_code")), duration_s=_float(d.get("duration_s")),
                               stdout_bytes=_int(d.get("stdout_bytes")), stderr_bytes=_int(d.get("stderr_bytes"))))
    return tuple(runs)


def _recordings(records: list[AuditRecord]) -> tuple[RecordingRef, ...]:
    refs = []
    for record in records:
        if record.event != RECORDING_SAVED_EVENT:
            continue
        d = record.details
        argv = d.get("argv")
        refs.append(RecordingRef(id=str(d.get("recording") or ""), kind=str(d.get("kind") or ""),
                                 at=record.ts.isoformat(timespec="seconds"),
                                 argv=tuple(str(a) for a in argv) if isinstance(argv, list) else (),
                                 duration_s=_float(d.get("duration_s")), sha256=str(d.get("sha256") or "")))
    return tuple(refs)


def _network(records: list[AuditRecord]) -> tuple[Destination, ...]:
    totals: dict[tuple[str, int, bool], list[int]] = {}
    for record in records:
        if record.event != "network.decision":
            continue
        d = record.details
        key = (str(d.get("host") or ""), _int(d.get("port")), bool(d.get("allowed")))
        total = totals.setdefault(key, [0, 0, 0])
        total[0] += 1
        total[1] += _int(d.get("bytes_up"))
        total[2] += _int(d.get("bytes_down"))
    return tuple(Destination(host=host, port=port, allowed=allowed, connections=n, bytes_up=up, bytes_down=down)
                 for (host, port, allowed), (n, up, down)
                 in sorted(totals.items(), key=lambda item: (not item[0][2], item[0][0], item[0][1])))


def _api(records: list[AuditRecord]) -> ApiUse:
    use = ApiUse()
    for record in records:
        if record.event != "gateway.request":
            continue
        d = record.details
        if not d.get("forwarded"):
            use = use.plus(ApiUse(refused=1))
            continue
        use = use.plus(ApiUse(requests=1, bytes_up=_int(d.get("bytes_up")), bytes_down=_int(d.get("bytes_down")),
                              tokens=_int(d.get("tokens"))))
    return use


def _outbox_changes(*, before: dict[str, OutboxEntry], after: dict[str, OutboxEntry]) -> list[OutboxChange]:
    changes = []
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path), after.get(path)
        if new is None:
            assert old is not None
            changes.append(OutboxChange(path=path, change=OutboxChangeKind.REMOVED, kind=old.kind, size=old.size))
        elif old is None:
            changes.append(OutboxChange(path=path, change=OutboxChangeKind.ADDED, kind=new.kind, size=new.size))
        elif (old.kind, old.size, old.modified) != (new.kind, new.size, new.modified) and new.kind != "dir":
            # A folder's time changes with its contents, which are listed themselves.
            changes.append(OutboxChange(path=path, change=OutboxChangeKind.CHANGED, kind=new.kind, size=new.size))
    return changes


def _parse_guest_files(output: bytes, *, complete: bool) -> tuple[tuple[GuestFile, ...], bool]:
    """find's NUL-terminated "TYPE SIZE MTIME PATH" entries; (files by path, whether cut)."""
    entries = output.split(b"\0")
    entries.pop()  # after the last NUL: empty, or a partial entry when the output was cut short
    files = []
    for entry in entries:
        parts = entry.split(b" ", 3)
        try:
            kind, size, modified, path = parts[0].decode(), int(parts[1]), float(parts[2]), parts[3]
        except (IndexError, ValueError, UnicodeDecodeError):
            continue  # not what find prints: ignore it rather than guess
        files.append(GuestFile(path=path.decode("utf-8", errors="backslashreplace"), kind=_KINDS.get(kind, "other"),
                               size=size, modified=modified))
    cut = len(files) > CHANGES_LIMIT or not complete
    return tuple(sorted(files[:CHANGES_LIMIT], key=lambda f: f.path)), cut


def _int(value: object) -> int:
    """A count from an audit record's details; 0 when it is missing or not one (never an error)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _float(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0
