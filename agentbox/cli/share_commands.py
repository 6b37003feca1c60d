"""share add/rm/list and outbox: read-only folders in, results out."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from agentbox import bootstrap
from agentbox.cli.output import print_json, print_table
from agentbox.errors import InvalidInput
from agentbox.model.shares import ReadOnlyProof, SecretChoice, ShareMechanism
from agentbox.services.outbox import DEFAULT_EXPORT_LIMIT
from agentbox.services.outbox_limit import OutboxUsage
from agentbox.services.share_paths import ALLOW_SYSTEM_OPTION
from agentbox.services.share_checks import ALLOW_OPTION, EXCLUDE_OPTION
from agentbox.services.shares import GUEST_OUTBOX, GUEST_SHARES


def add_share_parsers(sub: argparse._SubParsersAction, parser_class: type) -> None:  # type: ignore[type-arg]
    share = sub.add_parser("share", help="folders shared read-only into a workspace").add_subparsers(
        dest="share_command", metavar="ACTION", parser_class=parser_class, required=True)
    add = share.add_parser("add", help=f"share DIR read-only at {GUEST_SHARES}/TAG (live on a running workspace)")
    add.add_argument("name")
    add.add_argument("dir")
    add.add_argument("--tag", help="the name in the guest (default: the folder's name)")
    add.add_argument("--mechanism", choices=[m.value for m in ShareMechanism],
                     help="how read-only is enforced (default: the best this host offers)")
    add.add_argument(ALLOW_SYSTEM_OPTION, action="store_true",
                     help="share a system folder such as /etc or /var (never a credential folder)")
    add_secret_options(add)
    add.set_defaults(handler=share_add)
    rm = share.add_parser("rm", help="stop sharing a folder")
    rm.add_argument("name")
    rm.add_argument("tag")
    rm.set_defaults(handler=share_rm)
    lst = share.add_parser("list", help="the workspace's shares and how each is enforced")
    lst.add_argument("name")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=share_list)

    outbox = sub.add_parser("outbox", help=f"the workspace's writable {GUEST_OUTBOX}: list, export, clear")
    outbox.add_argument("name")
    outbox.add_argument("--json", action="store_true")
    outbox.add_argument("--export", metavar="DEST", type=Path, help="copy its regular files into DEST")
    outbox.add_argument("--max-mib", type=int, default=DEFAULT_EXPORT_LIMIT >> 20, help="export size limit")
    outbox.add_argument("--clear", action="store_true", help="empty it")
    outbox.add_argument("--limit-mib", type=int, metavar="MIB",
                        help="set its size limit (enforced on the host; while the workspace is stopped)")
    outbox.set_defaults(handler=outbox_command)


def add_secret_options(parser: argparse.ArgumentParser) -> None:
    """The choice `share add` (and `create --share`) needs when the folder holds likely secrets."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(EXCLUDE_OPTION, dest="secrets", action="store_const", const=SecretChoice.EXCLUDE.value,
                       help="leave the files with likely secrets out (the share becomes a copy made now)")
    group.add_argument(ALLOW_OPTION, dest="secrets", action="store_const", const=SecretChoice.ALLOW.value,
                       help="share the files with likely secrets anyway")


def share_add(args: argparse.Namespace) -> int:
    added = bootstrap.build_services().shares.add(name=args.name, source=args.dir, tag=args.tag,
                                                  mechanism=args.mechanism,
                                                  allow_system_folder=args.allow_system_folder,
                                                  secrets=args.secrets)
    share = added.share
    kind = "live" if share.mechanism.live else "a copy made now (host changes will not show)"
    print(f"{share.source} is shared read-only at {GUEST_SHARES}/{share.tag} in {args.name} "
          f"({share.mechanism.value}: {kind})")
    if share.excluded:
        print(f"left out ({len(share.excluded)} file(s) with likely secrets): {', '.join(share.excluded)}")
    elif share.secrets:
        print(f"warning: shared with {len(share.secrets)} likely secret(s) ({ALLOW_OPTION}): "
              f"{'; '.join(share.secrets)}", file=sys.stderr)
    proof = next((s.proof for s in bootstrap.build_services().shares.list(name=args.name)
                  if s.share.tag == share.tag), None)
    if proof is not None:
        print(f"read-only proof from inside the guest at {proof.time}: {proof_words(proof)}")
    if added.not_readable.count:
        print(f"warning: {added.not_readable.summary()}\nhint: {added.hint}", file=sys.stderr)
    return 0


def share_rm(args: argparse.Namespace) -> int:
    share = bootstrap.build_services().shares.remove(name=args.name, tag=args.tag)
    print(f"{share.source} is no longer shared into {args.name}")
    return 0


def share_list(args: argparse.Namespace) -> int:
    statuses = bootstrap.build_services().shares.list(name=args.name)
    if args.json:
        print_json([{**asdict(s.share), "attached": s.attached, "live": s.live,
                     "read_only_proof": asdict(s.proof) if s.proof else None, "new_secrets": list(s.new_secrets)}
                    for s in statuses])
    elif not statuses:
        print(f"{args.name} has no shares: agentbox share add {args.name} DIR")
    else:
        print_table(("TAG", "FOLDER", "MECHANISM", "LIVE", "ATTACHED", "READ-ONLY PROOF", "SECRETS"),
                    [(s.share.tag, s.share.source, s.share.mechanism.value, "live" if s.live else "copy",
                      "yes" if s.attached else "no",
                      f"{s.proof.time} {'write refused' if s.proof.refused else 'WRITABLE'}" if s.proof else "not yet",
                      secrets_words(s.share.excluded, s.share.secrets, s.new_secrets)) for s in statuses])
        for s in statuses:
            if s.new_secrets:
                print(f"warning: {s.share.tag}: {len(s.new_secrets)} likely secret(s) found since it was shared, "
                      f"visible in the guest: {'; '.join(s.new_secrets)}\nhint: agentbox share rm {args.name} "
                      f"{s.share.tag}, then share it again with {EXCLUDE_OPTION}", file=sys.stderr)
    return 0


def proof_words(proof: ReadOnlyProof) -> str:
    return ("the write was refused (" + proof.detail + ")" if proof.refused
            else "THE WRITE WENT THROUGH: the share was unplugged")


def secrets_words(excluded: tuple[str, ...], known: tuple[str, ...], new: tuple[str, ...]) -> str:
    words = [f"{len(excluded)} left out"] if excluded else [f"{len(known)} allowed"] if known else []
    if new:
        words.append(f"{len(new)} NEW")
    return ", ".join(words) or "none found"


def outbox_command(args: argparse.Namespace) -> int:
    outbox = bootstrap.build_services().outbox
    if args.export and args.clear:
        raise InvalidInput("--export and --clear are separate steps", hint="export first, then clear")
    if args.limit_mib is not None:
        if args.export or args.clear:
            raise InvalidInput("--limit-mib is a step of its own", hint="export or clear first, then set the limit")
        usage = outbox.set_limit(name=args.name, limit_mib=args.limit_mib)
        print(f"the outbox of {args.name} now holds up to {_mib(usage.limit_bytes)} "
              f"({_mib(usage.used_bytes)} used)")
        return 0
    if args.clear:
        print(f"outbox of {args.name} emptied ({outbox.clear(name=args.name)} file(s) removed)")
        return 0
    if args.export:
        result = outbox.export(name=args.name, dest=args.export, limit_bytes=args.max_mib << 20)
        if args.json:
            print_json(asdict(result))
        else:
            print(f"exported {len(result.copied)} file(s), {result.bytes} bytes, to {args.export}")
            for path, why in result.skipped:
                print(f"  skipped {path}: {why}")
        return 0
    entries = outbox.list(name=args.name)
    usage = outbox.usage(name=args.name)
    if args.json:
        print_json({"used_bytes": usage.used_bytes, "limit_bytes": usage.limit_bytes, "enforced": usage.enforced,
                    "note": usage.note, "entries": [asdict(e) for e in entries]})
        return 0
    print(usage_line(usage))
    if not entries:
        print(f"the outbox of {args.name} is empty (the guest writes to {GUEST_OUTBOX})")
    else:
        print_table(("PATH", "KIND", "SIZE", "MODIFIED"),
                    [(e.path, e.kind, str(e.size), datetime.fromtimestamp(e.modified, UTC).isoformat(
                        timespec="seconds")) for e in entries])
    return 0


def usage_line(usage: OutboxUsage) -> str:
    if not usage.enforced:
        return f"used {_mib(usage.used_bytes)}, no limit: {usage.note}"
    percent = 100 * usage.used_bytes / usage.limit_bytes
    return f"used {_mib(usage.used_bytes)} of {_mib(usage.limit_bytes)} ({percent:.0f}%), limit enforced on the host"


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
