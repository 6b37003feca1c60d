"""`agentbox audit [show] NAME` and `agentbox audit verify NAME`: read and check the audit trail."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agentbox import bootstrap
from agentbox.audit import AuditRecord, BreakKind, TrailVerdict, VerifyResult, unchained_path, utc_now
from agentbox.cli.output import print_json
from agentbox.errors import InvalidInput
from agentbox.model.progress import CancelToken

FOLLOW_POLL_S = 0.5
_AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_SINCE_HINT = "for example --since 2024-05-01T09:30 (local time), --since 2024-05-01T09:30Z, --since 10m, 2h or 1d"
_MAX_VALUE = 80

_USAGE = """\
agentbox audit [show] NAME [--since TIME] [--follow] [--json]
       agentbox audit verify NAME [--json]
       agentbox audit export NAME --out FILE [--with-evidence]
       agentbox audit verify --bundle FILE"""
_DESCRIPTION = """\
Every workspace has an append-only audit log (lifecycle, resets, commands, network
decisions); each record carries the hash of the one before it. The log outlives
`agentbox destroy` (unless --purge), and a new workspace of the same name continues it.

  agentbox audit NAME          show the records (same as `agentbox audit show NAME`)
  agentbox audit verify NAME   check every link and that no anchored record is missing (a log
                               cut short); exit 1 and name the first break
  agentbox audit export NAME --out FILE
                               one .tar.gz with the audit log, network decisions, receipts,
                               recordings and evidence manifests, with each file's SHA-256
  agentbox audit verify --bundle FILE
                               check such a bundle anywhere (no workspace needed)"""


def add_audit_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    audit = sub.add_parser("audit", help="show, follow or verify a workspace's audit trail", usage=_USAGE,
                           description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    audit.add_argument("words", nargs="+", metavar="NAME", help="[show|verify|export] then the workspace name")
    audit.add_argument("--out", metavar="FILE", type=Path, help="export: the bundle to write (.tar.gz)")
    audit.add_argument("--with-evidence", action="store_true",
                       help="export: also the panic evidence's RAM and disk copies (large)")
    audit.add_argument("--bundle", metavar="FILE", type=Path, help="verify: check an exported bundle instead")
    audit.add_argument("--since", metavar="TIME",
                       help="only records at or after TIME: ISO 8601 or an age (30s, 10m, 2h, 1d)")
    audit.add_argument("--follow", "-f", action="store_true",
                       help="keep printing records as they are appended (Ctrl-C ends)")
    audit.add_argument("--json", action="store_true", help="JSON lines, one record each (verify: the result as JSON)")
    audit.set_defaults(handler=audit_command)


def audit_command(args: argparse.Namespace) -> int:
    if args.bundle is not None:
        if args.words != ["verify"]:
            raise InvalidInput("--bundle goes with verify alone", hint="agentbox audit verify --bundle FILE")
        return verify_bundle(path=args.bundle, as_json=args.json)
    action, name = _action_and_name(args.words)
    if action == "export":
        return export(name=name, out=args.out, with_evidence=args.with_evidence)
    if args.out is not None or args.with_evidence:
        raise InvalidInput("--out and --with-evidence apply to export", hint=f"agentbox audit export {name} --out FILE")
    audit = bootstrap.build_history().audit
    audit.find(name=name)  # NotFound before anything else is said
    if action == "verify":
        if args.follow or args.since:
            raise InvalidInput("--follow and --since apply to showing a log, not to verify",
                               hint=f"agentbox audit verify {name}")
        return _verify(name=name, result=audit.verify(name=name), trail=audit.verify_trail(name=name),
                       as_json=args.json)
    since = parse_since(text=args.since, now=utc_now()) if args.since else None
    if args.follow:
        for record in audit.follow(name=name, since=since, cancel=CancelToken(), poll_s=FOLLOW_POLL_S):
            _print_record(record, as_json=args.json)
            sys.stdout.flush()
        return 0
    shown = 0
    for record in audit.records(name=name, since=since):
        _print_record(record, as_json=args.json)
        shown += 1
    if not args.json:
        if not shown:
            print("no audit records" + (f" since {args.since}" if since else ""))
        result = audit.verify(name=name)
        if result.first_break is not None:  # showing a log must not make a broken one look fine
            sys.stderr.write(f"warning: this log does not verify ({result.first_break.detail}); "
                             f"agentbox audit verify {name}\n")
    return 0


def _action_and_name(words: list[str]) -> tuple[str, str]:
    if len(words) == 1:
        return "show", words[0]
    if len(words) == 2 and words[0] in ("show", "verify", "export"):
        return words[0], words[1]
    raise InvalidInput(f"unexpected arguments: {' '.join(words)}",
                       hint="agentbox audit NAME, agentbox audit show NAME, agentbox audit verify NAME "
                            "or agentbox audit export NAME --out FILE")


def parse_since(*, text: str, now: datetime) -> datetime:
    """An ISO 8601 time (naive means local time) or an age before `now` such as 10m, 2h, 1d."""
    age = _AGE.match(text)
    if age:
        return now - timedelta(**{_UNITS[age.group(2)]: int(age.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"--since {text!r} is neither an ISO 8601 time nor an age", hint=_SINCE_HINT) from None
    return when.astimezone()  # a naive time is the user's local time


def _print_record(record: AuditRecord, *, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(record.to_json(), sort_keys=True) + "\n")
        return
    when = record.ts.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    details = "  ".join(f"{key}={_value(value)}" for key, value in record.details.items())
    sys.stdout.write(f"{when}  {record.seq:>5}  {record.event:<18} {details}".rstrip() + "\n")


def _value(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = shlex.join(value)
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, str) and (not text or any(c.isspace() for c in text)):
        text = json.dumps(text)
    return text if len(text) <= _MAX_VALUE else text[:_MAX_VALUE - 1] + "…"


def _verify(*, name: str, result: VerifyResult, trail: TrailVerdict, as_json: bool) -> int:
    intact = result.intact and trail.intact
    if as_json:
        print_json({**asdict(result), "intact": intact,
                    "network": {**asdict(trail), "intact": trail.intact}})
        return 0 if intact else 1
    segmented = len(result.files) > 1

    def where(file: Path | None) -> str:  # line numbers count within each file of a rotated log
        return f" of {file.name}" if segmented and file is not None else ""

    if result.first_break is None:
        across = f" in {len(result.files)} files" if segmented else ""
        anchored = f", {result.anchors} anchor(s) hold" if result.anchors else ""
        print(f"{name}: audit log intact: {result.records} record(s){across}{anchored}, head {result.head[:16]}")
    else:
        brk = result.first_break
        print(f"{name}: audit log BROKEN at line {brk.line}{where(brk.file)} ({brk.kind}): {brk.detail}")
        print(f"  {result.records} record(s) before it verified")
    for damage in result.recovered:
        print(f"  note: line {damage.line}{where(damage.file)}: damaged write of {damage.length} bytes at offset "
              f"{damage.offset} ({damage.reason}), recorded by line {damage.recovered_by}")
    if result.anchors_file is None:
        print("  note: no anchors file (a log from before anchors): records removed from the end would not show"
              + (f" beyond what {result.anchors} receipt(s) vouch for" if result.anchors else ""))
    if result.unreadable_anchors:
        print(f"  note: {result.unreadable_anchors} line(s) of {result.anchors_file} are not anchors (ignored)")
    _verify_trail(name=name, trail=trail)
    return 0 if intact else 1


def export(*, name: str, out: Path | None, with_evidence: bool) -> int:
    if out is None:
        raise InvalidInput("export needs --out FILE", hint=f"agentbox audit export {name} --out {name}-audit.tar.gz")
    bundles = bootstrap.build_history().bundles
    bundle = bundles.export(name=name, out=out.expanduser().absolute(), with_evidence=with_evidence)
    warning = "" if bundle.intact else f" (the trail did NOT verify when it was made: agentbox audit verify {name})"
    print(f"wrote {bundle.path}: {bundle.files} file(s), {bundle.bytes} bytes{warning}")
    print(f"check it anywhere: agentbox audit verify --bundle {bundle.path}")
    return 0


def verify_bundle(*, path: Path, as_json: bool) -> int:
    check = bootstrap.build_history().bundles.check(path=path.expanduser())
    if as_json:
        print_json({**asdict(check), "intact": check.intact})
        return 0 if check.intact else 1
    print(f"bundle {path}: workspace {check.workspace}, made {check.made}, {check.files} file(s)")
    for arc in check.changed:
        print(f"  CHANGED or missing since the bundle was made: {arc}")
    for arc in check.unlisted:
        print(f"  not in the manifest (added later): {arc}")
    _verify(name=check.workspace, result=check.audit, trail=check.trail, as_json=False)
    for receipt_id in check.receipts_not_vouched:
        print(f"  receipt {receipt_id}: the audit log does not vouch for it (changed, or not recorded)")
    for recording_id in check.recordings_not_vouched:
        print(f"  recording {recording_id}: the audit log does not vouch for it (changed, missing or incomplete)")
    print(f"bundle {'intact' if check.intact else 'NOT intact'}")
    return 0 if check.intact else 1


def _verify_trail(*, name: str, trail: TrailVerdict) -> None:
    """The decision trail's part of `audit verify`: a line of its own, file:line where it breaks."""
    noted = f"{trail.heads} head(s) noted in the audit log"
    found = trail.result
    if found is None:
        if trail.removed:
            print(f"  network decisions: removed with the workspace (destroyed); {noted}")
        elif trail.heads:
            print(f"{name}: network decisions BROKEN ({BreakKind.TRUNCATED}): {trail.path} is missing, "
                  f"but the audit log vouches for its records")
        else:
            print("  network decisions: none yet")
    elif found.first_break is None:
        rotated = f", from record {found.first_seq} (older ones rotated out)" if found.first_seq > 1 else ""
        print(f"  network decisions intact: {found.records} record(s) in {len(found.files)} file(s){rotated}, "
              f"{noted}, head {found.head[:16]}")
        if not trail.heads:
            print("  note: no head of the network decisions noted yet: decisions removed from their end "
                  "would not show until one is (stop, reset, session end, checkpoint)")
    else:
        brk = found.first_break
        print(f"{name}: network decisions BROKEN at {brk.file or trail.path}:{brk.line} ({brk.kind}): {brk.detail}")
        print(f"  {found.records} network decision record(s) before it verified")
    if trail.unchained:
        print(f"  note: {trail.unchained} network decision line(s) in {unchained_path(trail.path).name}.N are "
              "unchained (from before the decision trail was hash-chained): they cannot be verified")
