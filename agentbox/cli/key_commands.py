"""`agentbox key`: the host's API keys for the credential gateway. A key is read from stdin
or a masked prompt, never from the command line (argv shows in `ps` and shell history)."""

from __future__ import annotations

import argparse
import getpass
import sys
from dataclasses import asdict

from agentbox import bootstrap
from agentbox.cli.output import print_json, print_table
from agentbox.errors import Cancelled
from agentbox.model.providers import PROVIDERS, get_provider

_DESCRIPTION = """\
API keys stay on this host: workspaces get a per-session phantom token instead, which only
agentbox's credential gateway accepts (it puts the real key in and forwards to the
provider). Keys go in the desktop keyring when there is one, else in a 0600 file in
agentbox's config dir. Known providers: """ + ", ".join(f"{p.name} ({p.host})" for p in PROVIDERS)


def add_key_parser(sub: argparse._SubParsersAction, parser_class: type) -> None:  # type: ignore[type-arg]
    key = sub.add_parser("key", help="API keys for agents (kept on the host, never in a VM)",
                         description=_DESCRIPTION).add_subparsers(dest="key_command", metavar="ACTION",
                                                                  parser_class=parser_class, required=True)
    set_ = key.add_parser("set", help="store a provider's key (from stdin, or asked for without echo)")
    set_.add_argument("provider", help=", ".join(p.name for p in PROVIDERS))
    set_.set_defaults(handler=key_set)
    lst = key.add_parser("list", help="stored keys: provider and fingerprint (never the key)")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=key_list)
    rm = key.add_parser("rm", help="remove a provider's key")
    rm.add_argument("provider")
    rm.set_defaults(handler=key_rm)


def key_set(args: argparse.Namespace) -> int:
    provider = get_provider(args.provider)  # an unknown name fails before asking for a key
    if sys.stdin.isatty():
        try:
            raw = getpass.getpass(f"{provider.name} API key (not shown): ")
        except (EOFError, KeyboardInterrupt):
            raise Cancelled("no key stored") from None
    else:
        raw = sys.stdin.read()
    stored = bootstrap.build_keys().set(provider=provider.name, key=raw)
    print(f"stored the {stored.provider} key ({stored.fingerprint}) in the {_where(stored.store)}")
    return 0


def key_list(args: argparse.Namespace) -> int:
    keys = bootstrap.build_keys().list()
    if args.json:
        print_json([asdict(k) for k in keys])
    elif not keys:
        print("no API keys stored; agentbox key set PROVIDER stores one")
    else:
        print_table(["PROVIDER", "FINGERPRINT", "STORED IN", "SET"],
                    [[k.provider, k.fingerprint, _where(k.store), k.set_at] for k in keys])
    return 0


def key_rm(args: argparse.Namespace) -> int:
    removed = bootstrap.build_keys().remove(provider=args.provider)
    print(f"removed the {removed.provider} key ({removed.fingerprint})")
    return 0


def _where(store: str) -> str:
    return "desktop keyring" if store == "keyring" else "0600 key file"
