"""`agentbox net`: a workspace's network mode, allowlist, status and decision log."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from agentbox import bootstrap
from agentbox.cli.output import print_json
from agentbox.egress.records import ConnectionRecord
from agentbox.egress.wire import record_to_json
from agentbox.errors import InvalidInput
from agentbox.model.network import EntryKind, NetworkMode, parse_allow_entry
from agentbox.model.progress import CancelToken
from agentbox.services.network import NetworkService, PolicyUpdate

_MODES = tuple(mode.value for mode in NetworkMode)
_USAGE = """\
agentbox net NAME off|allowlist|learn|open
       agentbox net allow NAME ENTRY      (host, *.domain, IP or CIDR, each with an optional :port)
       agentbox net deny NAME ENTRY
       agentbox net show NAME [--json]
       agentbox net log NAME [--follow] [--json]
       agentbox net propose NAME [--exclude ENTRY]... [--apply] [--save TEMPLATE] [--json]"""
_DESCRIPTION = """\
The guest's only way out is agentbox's egress proxy on the host, which decides every
connection against the workspace's policy: off (nothing), allowlist (only listed
destinations; ports 80 and 443 unless an entry names one), learn (any public address, each
one recorded) or open (any public address). Loopback, private and link-local addresses stay
blocked unless an IP/CIDR entry names them. Changes apply to the next connection; switching
to off also cuts open ones.

After a session in learn mode, `net propose` prints the smallest allowlist that covers what
the decision log shows allowed (host:port; *.domain where 3 or more names below one domain
were used); --apply makes it the allowlist and switches to allowlist mode, --save TEMPLATE
writes it into a user template; --exclude ENTRY leaves a proposed entry out."""


def add_net_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    net = sub.add_parser("net", help="network: mode, allowlist, status, decision log", usage=_USAGE,
                         description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    net.add_argument("words", nargs="+", metavar="WORDS", help="see the usage above")
    net.add_argument("--json", action="store_true")
    net.add_argument("--follow", "-f", action="store_true", help="net log: keep printing new decisions")
    net.add_argument("--apply", action="store_true", help="net propose: set it and switch to allowlist mode")
    net.add_argument("--save", metavar="TEMPLATE", help="net propose: write it into this user template")
    net.add_argument("--exclude", metavar="ENTRY", action="append", default=[],
                     help="net propose: leave this proposed entry out (repeatable)")
    net.set_defaults(handler=net_command)


def net_command(args: argparse.Namespace) -> int:
    words = list(args.words)
    network = bootstrap.build_services().network
    match words:
        case ["allow", name, entry]:
            _print_update(network.allow(name=name, entry=entry), name=name, as_json=args.json)
        case ["deny", name, entry]:
            _print_update(network.deny(name=name, entry=entry), name=name, as_json=args.json)
        case ["show", name]:
            status = network.show(name=name)
            if args.json:
                print_json(asdict(status))
            else:
                print(f"{name}: network {status.mode.value}")
                print(f"  allowlist: {', '.join(status.allowlist) or '(empty)'}")
                print(f"  egress proxy: {'running' if status.proxy_running else 'DOWN'}; "
                      f"forward into the guest: {'up' if status.forward_connected else 'DOWN'}; "
                      f"credential gateway: {'running' if status.gateway_running else 'DOWN'}")
                print(f"  the guest can reach: {status.egress}")
        case ["log", name]:
            for record in network.records(name=name, follow=args.follow, cancel=CancelToken()):
                _print_record(record, as_json=args.json)
        case ["propose", name]:
            _propose(network, name=name, args=args)
        case [name, mode] if mode in _MODES:
            _print_update(network.set_mode(name=name, mode=mode), name=name, as_json=args.json)
        case [_, mode] if mode not in ("allow", "deny", "show", "log", "propose"):
            raise InvalidInput(f"unknown network mode {mode!r}: use one of {', '.join(_MODES)}",
                               hint=f"agentbox net {words[0]} off")
        case _:
            raise InvalidInput(f"agentbox net {' '.join(words)}: not understood", hint="usage:\n" + _USAGE)
    return 0


def _propose(network: NetworkService, *, name: str, args: argparse.Namespace) -> None:
    proposal = network.propose(name=name)
    proposed = proposal.render()
    excluded = {parse_allow_entry(text=text).render() for text in args.exclude}
    unknown = sorted(excluded - set(proposed))
    if unknown:
        raise InvalidInput(f"--exclude {', '.join(unknown)}: not in the proposal for {name!r}",
                           hint=f"the proposal is: {', '.join(proposed) or '(empty)'}")
    kept = tuple(text for text in proposed if text not in excluded)
    if (args.apply or args.save) and not kept:
        raise InvalidInput(f"the decision log of {name!r} shows no allowed connection to propose"
                           + (" (all excluded)" if proposed else ""),
                           hint=f"agentbox net {name} learn, let the agent work, then propose again")
    if args.json:
        out: dict[str, object] = {"proposal": [{"entry": p.text, "hosts": list(p.hosts), "connections": p.connections}
                                               for p in proposal.entries if p.text not in excluded],
                                  "allowed": proposal.allowed, "refused": proposal.refused}
    else:
        print(f"{name}: {proposal.allowed} allowed and {proposal.refused} refused connection(s) in the log; "
              f"the smallest allowlist for what was allowed:")
        for entry in proposal.entries:
            mark = "  (excluded)" if entry.text in excluded else ""
            covers = f" covers {', '.join(entry.hosts)};" if entry.entry.kind is EntryKind.WILDCARD else ""
            print(f"  {entry.text}  ({covers} {entry.connections} connection(s)){mark}")
        if not proposal.entries:
            print("  (nothing: no allowed connection yet)")
    if args.save:
        path = network.save_proposal(name=name, template=args.save, entries=kept)
        if args.json:
            out["saved"] = str(path)
        else:
            print(f"saved as template {args.save!r}: {path}")
    if args.apply:
        update = network.apply_proposal(name=name, entries=kept)
        if args.json:
            out["applied"] = {"mode": update.policy.mode.value, "allowlist": list(update.policy.render()),
                              "live": update.live, "cut": update.cut}
        else:
            _print_update(update, name=name, as_json=False)
    if args.json:
        print_json(out)


def _print_update(update: PolicyUpdate, *, name: str, as_json: bool) -> None:
    if as_json:
        print_json({"mode": update.policy.mode.value, "allowlist": list(update.policy.render()),
                    "live": update.live, "cut": update.cut})
        return
    where = "now, for the next connection" if update.live else "when the workspace next runs"
    cut = f"; {update.cut} open connection(s) closed" if update.cut else ""
    print(f"{name}: network {update.policy.mode.value}, allowlist "
          f"{', '.join(update.policy.render()) or '(empty)'} (applies {where}{cut})")


def _print_record(record: ConnectionRecord, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(record_to_json(record)), flush=True)
        return
    where = f"{record.host}:{record.port}" + (f" ({record.address})" if record.address else "")
    verdict = "ALLOW" if record.decision.allowed else "DENY"
    print(f"{record.time}  {verdict:<5} {record.method or '-':<7} {where}  rule {record.decision.rule}  "
          f"up {record.bytes_up} B, down {record.bytes_down} B, {record.duration_s:.2f} s  [{record.outcome}]",
          flush=True)
