"""`agentbox receipts NAME` and `agentbox receipt NAME ID`: what past sessions did.

Receipts are read from the data dir alone (no hypervisor needed), so they can be read
after the workspace is gone. Paths, host names and commands in a receipt may come from the
guest: every one is shown with control characters escaped, so none can drive the terminal.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime

from agentbox import bootstrap
from agentbox.cli.output import print_json
from agentbox.model.receipt import GuestStatus, Integrity, Receipt
from agentbox.model.redaction import REDACTED

SESSION_END_FILES = 30  # guest paths printed when a session ends; `agentbox receipt` shows all
_INTEGRITY = {
    Integrity.MATCHES: "matches the SHA-256 in the audit log",
    Integrity.DIFFERS: "CHANGED since it was written: its SHA-256 differs from the audit log's",
    Integrity.UNRECORDED: "no audit record vouches for it (the log was purged, or the file was put there)",
}


def add_receipt_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    receipts = sub.add_parser("receipts", help="list the receipts of a workspace's past sessions")
    receipts.add_argument("name")
    receipts.add_argument("--json", action="store_true")
    receipts.set_defaults(handler=list_receipts)
    receipt = sub.add_parser("receipt", help="show what one session did (commands, network, outbox, files)")
    receipt.add_argument("name")
    receipt.add_argument("id", help="the receipt id (or a unique start of it), from `agentbox receipts NAME`")
    receipt.add_argument("--json", action="store_true")
    receipt.set_defaults(handler=show_receipt)


def list_receipts(args: argparse.Namespace) -> int:
    summaries = bootstrap.build_history().receipts.list(name=args.name)
    if args.json:
        print_json([asdict(s) for s in summaries])
        return 0
    if not summaries:
        print(f"no receipts for {args.name}: one is written whenever a session ends "
              f"(agentbox session end {args.name}, or agentbox run --name {args.name})")
        return 0
    rows = [[s.id, "?", "?", "?", "?", "?", _safe(s.problem)] if s.problem else
            [s.id, _when(s.started), _duration(s.duration_s), str(s.commands), str(s.allowed), str(s.denied),
             str(s.integrity)] for s in summaries]
    sys.stdout.write("\n".join(_table(["ID", "STARTED", "DURATION", "COMMANDS", "ALLOWED", "DENIED", "INTEGRITY"],
                                      rows)) + "\n")
    return 0


def show_receipt(args: argparse.Namespace) -> int:
    stored = bootstrap.build_history().receipts.get(name=args.name, receipt_id=args.id)
    if args.json:
        print_json(asdict(stored))
    else:
        sys.stdout.write(format_receipt(stored.receipt) + f"\n\nintegrity: {_INTEGRITY[stored.integrity]}\n"
                         + f"audit head: {_head(stored.receipt)}\n")
    if stored.integrity is Integrity.DIFFERS:
        sys.stderr.write(f"warning: receipt {stored.receipt.id} was changed after it was written; "
                         f"agentbox audit verify {args.name} checks the log itself\n")
    return 0


def format_receipt(receipt: Receipt, *, max_files: int | None = None) -> str:
    """The receipt for people; `max_files` shortens the guest's file list (with a pointer to the rest)."""
    lines = [f"receipt {_safe(receipt.id)} of workspace {_safe(receipt.workspace)}",
             f"  session: {_when(receipt.started)} to {_when(receipt.ended)}, {_duration(receipt.duration_s)}"
             f" ({_safe(receipt.reason)})", ""]
    lines.append(f"commands run through agentbox: {len(receipt.commands)}")
    lines += ["  " + line for line in _table(["EXIT", "SECONDS", "STDOUT", "STDERR", "COMMAND"], [
        [str(c.exit_code), f"{c.duration_s:.1f}", _size(c.stdout_bytes), _size(c.stderr_bytes),
         _safe(shlex.join(c.argv))] for c in receipt.commands])] if receipt.commands else []
    if redacted := sum(c.redacted for c in receipt.commands):
        lines.append(f"  {redacted} likely secret(s) in these command lines were recorded as {REDACTED}")
    lines += ["", f"recorded sessions: {len(receipt.recordings)}"
              + (f" (agentbox replay {_safe(receipt.workspace)} ID)" if receipt.recordings else "")]
    lines += ["  " + line for line in _table(["ID", "KIND", "SECONDS", "COMMAND"], [
        [_safe(r.id), _safe(r.kind), f"{r.duration_s:.1f}", _safe(shlex.join(r.argv))]
        for r in receipt.recordings])] if receipt.recordings else []
    allowed, denied = receipt.connections(allowed=True), receipt.connections(allowed=False)
    lines += ["", f"network: {allowed} connection(s) allowed, {denied} denied"]
    lines += ["  " + line for line in _table(["DECISION", "DESTINATION", "CONNECTIONS", "UP", "DOWN"], [
        ["allowed" if d.allowed else "denied", _safe(f"{d.host or '(unreadable request)'}:{d.port}"),
         str(d.connections), _size(d.bytes_up), _size(d.bytes_down)] for d in receipt.network])] \
        if receipt.network else []
    api = receipt.api
    lines += ["", f"API (credential gateway): {api.requests} request(s), {_size(api.bytes_up)} up,"
                  f" {_size(api.bytes_down)} down, {api.tokens} token(s) reported, {api.refused} refused"]
    if receipt.budgets:
        lines += ["", "Budgets: " + "; ".join(line.describe() for line in receipt.budgets)]
    lines += ["", _outbox_heading(receipt)]
    lines += [f"  {c.change:<8} {_safe(c.path)} ({_safe(c.kind)}, {_size(c.size)})" for c in receipt.outbox.changes]
    if receipt.outbox.truncated:
        lines.append(f"  ... cut at {len(receipt.outbox.changes)} entries")
    lines += ["", *_guest_lines(receipt, max_files=max_files)]
    lines += ["", "not on this receipt:"] + [f"  - {note}" for note in receipt.not_covered]
    return "\n".join(lines)


def _head(receipt: Receipt) -> str:
    head = receipt.audit_head
    if head is None:
        return "not recorded (a receipt from before audit heads)"
    return f"record {head.seq}, hash {_safe(head.hash[:16])} (agentbox audit verify checks the log still holds it)"


def _outbox_heading(receipt: Receipt) -> str:
    outbox = receipt.outbox
    counts = {kind: sum(1 for c in outbox.changes if c.change == kind) for kind in ("added", "changed", "removed")}
    text = f"outbox: {counts['added']} added, {counts['changed']} changed, {counts['removed']} removed"
    if not outbox.compared:
        text += " (no listing from the session's start: everything in it is shown as added)"
    return text


def _guest_lines(receipt: Receipt, *, max_files: int | None) -> list[str]:
    guest = receipt.guest
    head = f"files changed in the guest since the clean snapshot, {guest.source}:"
    if guest.status is not GuestStatus.REPORTED:
        return [head, f"  unknown: {_safe(guest.detail)}"]
    shown = guest.files if max_files is None else guest.files[:max_files]
    lines = [f"{head} {len(guest.files)}{' (cut: the guest reported more)' if guest.truncated else ''}"]
    lines += [f"  {_safe(f.path)} ({_safe(f.kind)}, {_size(f.size)})" for f in shown]
    if len(shown) < len(guest.files):
        lines.append(f"  ... {len(guest.files) - len(shown)} more: agentbox receipt {receipt.workspace} {receipt.id}")
    return lines


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in (headers, *rows)]


def _safe(text: str) -> str:
    """Control characters (an escape sequence in a file name, say) shown escaped, never sent raw."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _when(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return _safe(iso)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _size(count: int) -> str:
    value, unit = float(count), "B"
    for bigger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
