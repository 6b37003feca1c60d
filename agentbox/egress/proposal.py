"""The smallest allowlist that covers what a workspace used: made from its decision log,
typically after a session in network mode `learn`.

The rules, each tested in tests/egress/test_proposal.py:

- Only connections the proxy allowed count; refused ones (not listed, blocked addresses,
  mode off, bad requests) are never proposed.
- A name is proposed as `host:port` for each port it used; a name that used exactly the
  default ports 80 and 443 becomes `host` (which means those two). An IP literal becomes
  an IP entry with its port.
- Wildcards: when WILDCARD_MIN or more different names directly below one domain (same
  port) were used, they become one `*.domain:port`. Never for a domain of fewer than two
  labels (`*.com`), and never for names whose address was not public: a wildcard never
  unlocks a loopback or private address (egress/policy.py rule 3), so those keep their
  host entries.
- Duplicates collapse; the result is sorted by its text.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from agentbox.egress.policy import AddressClass, classify_address, ip_literal
from agentbox.egress.records import ConnectionRecord
from agentbox.model.network import DEFAULT_PORTS, AllowEntry, EntryKind, normalise_host

WILDCARD_MIN = 3  # "many subdomains": three or more sibling names under one domain


@dataclass(frozen=True)
class ProposedEntry:
    entry: AllowEntry
    hosts: tuple[str, ...]  # the names (or addresses) it covers, as used, sorted
    connections: int  # allowed connections it accounts for

    @property
    def text(self) -> str:
        return self.entry.render()


@dataclass(frozen=True)
class Proposal:
    entries: tuple[ProposedEntry, ...]
    allowed: int  # allowed connections read
    refused: int  # refused connections read (never proposed)

    def render(self) -> tuple[str, ...]:
        return tuple(p.text for p in self.entries)


@dataclass(frozen=True)
class _Use:
    host: str
    port: int
    public: bool


def propose(*, records: Iterable[ConnectionRecord]) -> Proposal:
    """The smallest allowlist covering every allowed connection in `records`."""
    uses: dict[_Use, int] = defaultdict(int)
    allowed = refused = 0
    for record in records:
        if not record.decision.allowed or not record.host or not record.port:
            refused += not record.decision.allowed
            continue
        allowed += 1
        uses[_Use(host=normalise_host(host=record.host.strip("[]")), port=record.port,
                  public=_public(record.address))] += 1
    return Proposal(entries=_entries(uses), allowed=allowed, refused=refused)


def _entries(uses: dict[_Use, int]) -> tuple[ProposedEntry, ...]:
    out: list[ProposedEntry] = []
    names: dict[tuple[str, int], int] = defaultdict(int)  # (name, port) -> connections
    public_names: set[tuple[str, int]] = set()
    for use, count in uses.items():
        literal = ip_literal(host=use.host)
        if literal is not None:
            out.append(ProposedEntry(entry=AllowEntry(kind=EntryKind.NETWORK, network=ipaddress.ip_network(literal),
                                                      port=use.port), hosts=(use.host,), connections=count))
            continue
        names[(use.host, use.port)] += count
        if use.public:
            public_names.add((use.host, use.port))
    # Wildcards first: sibling public names under one domain on one port.
    siblings: dict[tuple[str, int], set[str]] = defaultdict(set)
    for host, port in public_names:
        parent = host.split(".", 1)[1] if "." in host else ""
        if parent.count(".") >= 1:
            siblings[(parent, port)].add(host)
    covered: set[tuple[str, int]] = set()
    for (parent, port), hosts in siblings.items():
        if len(hosts) >= WILDCARD_MIN:
            covered.update((h, port) for h in hosts)
            out.append(ProposedEntry(entry=AllowEntry(kind=EntryKind.WILDCARD, name=parent, port=port),
                                     hosts=tuple(sorted(hosts)), connections=sum(names[(h, port)] for h in hosts)))
    # The rest by name: both default ports used make one entry without a port.
    by_host: dict[str, dict[int, int]] = defaultdict(dict)
    for (host, port), count in names.items():
        if (host, port) not in covered:
            by_host[host][port] = count
    for host, ports in by_host.items():
        if set(DEFAULT_PORTS) <= set(ports):
            out.append(ProposedEntry(entry=AllowEntry(kind=EntryKind.HOST, name=host), hosts=(host,),
                                     connections=sum(ports[p] for p in DEFAULT_PORTS)))
            ports = {p: c for p, c in ports.items() if p not in DEFAULT_PORTS}
        out.extend(ProposedEntry(entry=AllowEntry(kind=EntryKind.HOST, name=host, port=port), hosts=(host,),
                                 connections=count) for port, count in ports.items())
    return tuple(sorted(out, key=lambda p: p.text))


def _public(address: str) -> bool:
    try:
        return classify_address(address=ipaddress.ip_address(address)) is AddressClass.PUBLIC
    except ValueError:
        return False
