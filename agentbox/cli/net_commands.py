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
from agentbox.model.network import NetworkMode
from agentbox.model.progress import CancelToken
from agentbox.services.network import PolicyUpdate

_MODES = tuple(mode.value for mode in NetworkMode)
_USAGE = """\
agentbox net NAME off|allowlist|open
       agentbox net allow NAME ENTRY      (host, *.domain, IP or CIDR, each with an optional :port)
       agentbox net deny NAME ENTRY
       agentbox net show NAME [--json]
       agentbox net log NAME [--follow] [--json]"""
_DESCRIPTION = """\
The guest's only way out is agentbox's egress proxy on the host, which decides every
connection against the workspace's policy: off (nothing), allowlist (only listed
destinations; ports 80 and 443 unless an entry names one) or open (any public address).
Loopback, private and link-local addresses stay blocked unless an IP/CIDR entry names
them. Changes apply to the next connection; switching to off also cuts open ones."""


def add_net_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    net = sub.add_parser("net", help="network: mode, allowlist, status, decision log", usage=_USAGE,
                         description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    net.add_argument("words", nargs="+", metavar="WORDS", help="see the usage above")
    net.add_argument("--json", action="store_true")
    net.add_argument("--follow", "-f", action="store_true", help="net log: keep printing new decisions")
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
        case [name, mode] if mode in _MODES:
            _print_update(network.set_mode(name=name, mode=mode), name=name, as_json=args.json)
        case [_, mode] if mode not in ("allow", "deny", "show", "log"):
            raise InvalidInput(f"unknown network mode {mode!r}: use one of {', '.join(_MODES)}",
                               hint=f"agentbox net {words[0]} off")
        case _:
            raise InvalidInput(f"agentbox net {' '.join(words)}: not understood", hint="usage:\n" + _USAGE)
    return 0


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
