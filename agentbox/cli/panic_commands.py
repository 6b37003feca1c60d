"""`agentbox panic NAME` (asks nothing) and `agentbox evidence NAME`: what was kept."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from agentbox import bootstrap
from agentbox.cli.output import print_json, print_table
from agentbox.cli.progress import ProgressPrinter
from agentbox.errors import InvalidInput
from agentbox.model.evidence import Evidence, EvidenceIntegrity
from agentbox.model.progress import CancelToken
from agentbox.services.panic import PanicService


def add_panic_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    panic = sub.add_parser("panic", help="cut the network now, freeze the guest, keep its RAM and disk as "
                                         "evidence, then reset it to clean (asks nothing)")
    panic.add_argument("name")
    panic.add_argument("--json", action="store_true")
    panic.set_defaults(handler=panic_command)
    evidence = sub.add_parser("evidence", help="list the evidence panics kept; verify, restore or remove one")
    evidence.add_argument("name")
    action = evidence.add_mutually_exclusive_group()
    action.add_argument("--verify", metavar="ID", help="hash the files again against the audit log's SHA-256")
    action.add_argument("--rm", metavar="ID", help="remove the evidence (its files and manifest)")
    action.add_argument("--restore", metavar="ID", help="boot a copy of the evidence disk as a new workspace "
                                                        "(--as NEWNAME) for inspection, network off for good")
    evidence.add_argument("--as", dest="as_name", metavar="NEWNAME", help="the new workspace's name (--restore)")
    evidence.add_argument("--json", action="store_true")
    evidence.set_defaults(handler=evidence_command)


def panic_command(args: argparse.Namespace) -> int:
    outcome = bootstrap.build_services().panic.panic(name=args.name, on_progress=ProgressPrinter(),
                                                      cancel=CancelToken())
    if args.json:
        print_json(asdict(outcome))
        return 0
    print(f"network of {args.name} cut {outcome.cut_s:.2f} s after the panic "
          f"({outcome.cut} open connection(s) closed); it stays off")
    if outcome.evidence is None:
        print("the workspace was not running: no RAM to keep")
    else:
        print(_evidence_line(outcome.evidence))
    receipt = f"; receipt {outcome.receipt} (agentbox receipt {args.name} {outcome.receipt})" if outcome.receipt else ""
    print(f"reset to clean {outcome.clean_s:.1f} s after the panic{receipt}")
    print(f"to let it out again: agentbox net {args.name} allowlist")
    return 0


def evidence_command(args: argparse.Namespace) -> int:
    if args.as_name and not args.restore:
        raise InvalidInput("--as names the workspace of a restore", hint=f"agentbox evidence {args.name} "
                                                                         f"--restore ID --as {args.as_name}")
    if args.restore and not args.as_name:
        raise InvalidInput("--restore needs the new workspace's name",
                           hint=f"agentbox evidence {args.name} --restore {args.restore} --as {args.name}-inspect")
    panic = bootstrap.build_services().panic
    if args.restore:
        return _restore(panic=panic, args=args)
    if args.rm:
        removed = panic.remove_evidence(name=args.name, evidence_id=args.rm)
        print(f"evidence {removed.id} of {args.name} removed")
        return 0
    if args.verify:
        stored = panic.verify_evidence(name=args.name, evidence_id=args.verify)
        if args.json:
            print_json(asdict(stored))
        else:
            print(f"{_evidence_line(stored.evidence)}\nintegrity: {stored.integrity}")
        return 0 if stored.integrity is EvidenceIntegrity.MATCHES else 1
    kept = panic.evidence(name=args.name)
    if args.json:
        print_json([asdict(e) for e in kept])
        return 0
    if not kept:
        print(f"no evidence for {args.name}: `agentbox panic {args.name}` keeps some")
        return 0
    print_table(["ID", "TAKEN", "RAM", "DISK", "CUT", "NOTE"], [
        [e.id, e.taken, _mib(e.memory.bytes) if e.memory else "-", _mib(e.disk.bytes) if e.disk else "-",
         str(e.network_cut), e.problem] for e in kept])
    return 0


def _restore(*, panic: PanicService, args: argparse.Namespace) -> int:
    restored = panic.restore_evidence(name=args.name, evidence_id=args.restore, as_name=args.as_name,
                                      on_progress=ProgressPrinter(), cancel=CancelToken())
    if args.json:
        print_json(asdict(restored))
        return 0 if restored.integrity_after is EvidenceIntegrity.MATCHES else 1
    print(f"evidence {restored.evidence.id} of {args.name} restored into {restored.workspace}: network off "
          f"(it stays off), no shares; inspect it with: agentbox ssh {restored.workspace}")
    print(restored.memory_note)
    print(f"evidence integrity after the restore: {restored.integrity_after}")
    print(f"when done: agentbox destroy {restored.workspace}")
    return 0 if restored.integrity_after is EvidenceIntegrity.MATCHES else 1


def _evidence_line(evidence: Evidence) -> str:
    if not evidence.files:
        return f"evidence {evidence.id}: nothing saved ({evidence.problem})"
    where = evidence.files[0].path.rsplit("/", 1)[0]
    return (f"evidence {evidence.id} kept in {where}: RAM {_mib(evidence.memory.bytes) if evidence.memory else '-'}, "
            f"disk {_mib(evidence.disk.bytes) if evidence.disk else '-'} (SHA-256 in the audit log)")


def _mib(count: int) -> str:
    return f"{count / (1 << 20):.0f} MiB"
