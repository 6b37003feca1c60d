"""The decision engine: may this connection go out under this policy?

It judges the address the proxy resolved and will connect to, never just the name, so a
name cannot be re-pointed between the check and the connection. The rules, in order, fail
closed:

1. Mode `off`: everything is denied (rule `mode:off`).
2. The address is classified. Not public: loopback, private (RFC 1918, ULA fc00::/7),
   shared (CGNAT 100.64.0.0/10), link-local (169.254.0.0/16 with the cloud metadata address
   169.254.169.254, fe80::/10), multicast, unspecified, and reserved (everything else that
   is not globally routable: documentation, benchmarking, 240/4, broadcast, site-local, and
   6to4 / NAT64 addresses wrapping a non-public IPv4). An IPv4-mapped IPv6 address is judged
   as the IPv4 address it maps.
3. A non-public address is allowed (in `allowlist`, `learn` and `open` mode alike) only by
   a. an IP or CIDR entry covering the address on that port; or
   b. for loopback, private and shared addresses of a pinned name (settings `egress_hosts`,
      where the user wrote the name's address down): a host entry (not a wildcard) naming
      exactly that name on that port.
   A name entry never unlocks an address the name merely resolves to: DNS is not the
   user's word, and a name re-pointed at 127.0.0.1 or 192.168.1.1 (DNS rebinding) would
   reach the host or the LAN. So a host entry `git.corp.example` (or even `localhost`)
   resolving to a private or loopback address is refused, link-local, multicast,
   unspecified and reserved addresses need an IP/CIDR entry, and a wildcard never unlocks
   anything that is not public.
4. A public address: mode `open` allows it (`mode:open`); mode `allowlist` allows it when a
   host or wildcard entry names the asked name, or, for an asked IP literal or a pinned
   name, an IP/CIDR entry covers it, on that port; otherwise it is `not-listed`, the only
   denial an approver may overturn (and only ever for public addresses).
5. Mode `learn` judges like `allowlist`, but a public address no entry names is allowed
   (`mode:learn`) instead of `not-listed`: the decision log then holds what the session
   needed, and `egress/proposal.py` makes the smallest allowlist of it. Everything rule 3
   refuses stays refused, exactly as in `allowlist` and `open` (a pinned name too needs its
   host entry), so learning never reaches the host, the LAN or a metadata service.

Names are resolved only when they might be allowed (`prejudge`): never in mode `off`, always in
`open` and `learn` (any name may be allowed there), and in
mode `allowlist` only when a host or wildcard entry names them on that port. Looking up any
name a guest sends would let it leak data through the host's DNS queries.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum

from agentbox.model.network import AllowEntry, EntryKind, IPAddress, NetworkMode, NetworkPolicy, normalise_host

RULE_OFF = "mode:off"
RULE_OPEN = "mode:open"
RULE_LEARN = "mode:learn"
RULE_NOT_LISTED = "not-listed"


class AddressClass(StrEnum):
    PUBLIC = "public"
    LOOPBACK = "loopback"
    PRIVATE = "private"
    SHARED = "shared"
    LINK_LOCAL = "link-local"
    MULTICAST = "multicast"
    UNSPECIFIED = "unspecified"
    RESERVED = "reserved"


_PRIVATE = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_DESCRIBED = {
    AddressClass.LOOPBACK: "a loopback address (this host)",
    AddressClass.PRIVATE: "a private-network address",
    AddressClass.SHARED: "a shared (carrier-grade NAT) address",
    AddressClass.LINK_LOCAL: "a link-local address (including cloud metadata services)",
    AddressClass.MULTICAST: "a multicast address",
    AddressClass.UNSPECIFIED: "the unspecified address",
    AddressClass.RESERVED: "a reserved, non-routable address",
}


@dataclass(frozen=True)
class Decision:
    """`rule` names what decided (an entry's canonical text, `mode:...`, `blocked:<class>`,
    `not-listed`, ...); `reason` says it in words. `approvable`: an approver may allow it."""

    allowed: bool
    rule: str
    reason: str
    approvable: bool = False


def classify_address(*, address: IPAddress) -> AddressClass:
    address = _unmapped(address)
    if address.is_unspecified:
        return AddressClass.UNSPECIFIED
    if address.is_loopback:
        return AddressClass.LOOPBACK
    if address.is_link_local:
        return AddressClass.LINK_LOCAL
    if address.is_multicast:
        return AddressClass.MULTICAST
    if address in _SHARED:
        return AddressClass.SHARED
    if any(address in net for net in _PRIVATE if net.version == address.version):
        return AddressClass.PRIVATE
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:  # 6to4 / NAT64 reach an IPv4 host: judge that host
            return AddressClass.PUBLIC if classify_address(address=embedded) is AddressClass.PUBLIC \
                else AddressClass.RESERVED
        if address.is_site_local or address.is_reserved:
            return AddressClass.RESERVED
    if not address.is_global:
        return AddressClass.RESERVED
    return AddressClass.PUBLIC


def decide(*, host: str, address: IPAddress, port: int, policy: NetworkPolicy, pinned: bool = False) -> Decision:
    """Judge a connection to `address`:`port`, which the client asked for as `host` (a name
    or an IP literal); `pinned`: `address` is the one the user's settings pin `host` to,
    not a DNS answer. See the module docstring for the rules."""
    if policy.mode is NetworkMode.OFF:
        return Decision(False, RULE_OFF, "network mode is off: no egress at all")
    host = normalise_host(host=host.strip("[]"))
    address = _unmapped(address)
    shown = _shown(address, port)
    kind = classify_address(address=address)
    if kind is not AddressClass.PUBLIC:
        entry = _unlocking_entry(policy, host=host, address=address, port=port, kind=kind, pinned=pinned)
        if entry is not None:
            return Decision(True, entry.render(), f"{shown} is named by entry {entry.render()}")
        return Decision(
            False,
            f"blocked:{kind}",
            f"{shown} is {_DESCRIBED[kind]}; only an IP or CIDR entry naming it can allow it"
            + ("" if pinned or ip_literal(host=host) is not None else f" (a name entry allows public addresses only, "
               f"and {_shown_host(host)} resolved here)"),
        )
    if policy.mode is NetworkMode.OPEN:
        return Decision(True, RULE_OPEN, "network mode is open: any public address")
    literal = ip_literal(host=host) is not None
    for entry in policy.allowlist:
        by_address = (literal or pinned) and entry.covers(address=address, port=port)
        if by_address or (not literal and entry.matches_name(host=host, port=port)):
            return Decision(True, entry.render(), f"{_shown_host(host)}:{port} matches entry {entry.render()}")
    if policy.mode is NetworkMode.LEARN:
        return Decision(True, RULE_LEARN, f"network mode is learn: {_shown_host(host)}:{port} allowed and recorded")
    return _not_listed(host, port)


def prejudge(*, host: str, port: int, policy: NetworkPolicy) -> Decision | None:
    """The decision when it is known before resolving `host`, else None (resolve, then
    `decide` each address). Refusing here is what keeps unlisted names out of DNS."""
    if policy.mode is NetworkMode.OFF:
        return Decision(False, RULE_OFF, "network mode is off: no egress at all")
    host = normalise_host(host=host.strip("[]"))
    if policy.mode in (NetworkMode.OPEN, NetworkMode.LEARN) or ip_literal(host=host) is not None:
        return None
    if any(entry.matches_name(host=host, port=port) for entry in policy.allowlist):
        return None
    return _not_listed(host, port)


def ip_literal(*, host: str) -> IPAddress | None:
    """The address when `host` is an IP literal (IPv6 with or without brackets), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _unlocking_entry(
    policy: NetworkPolicy, *, host: str, address: IPAddress, port: int, kind: AddressClass, pinned: bool
) -> AllowEntry | None:
    for entry in policy.allowlist:
        if entry.covers(address=address, port=port):
            return entry
    if pinned and kind in (AddressClass.LOOPBACK, AddressClass.PRIVATE, AddressClass.SHARED):
        for entry in policy.allowlist:
            if entry.kind is EntryKind.HOST and entry.matches_name(host=host, port=port):
                return entry
    return None


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _not_listed(host: str, port: int) -> Decision:
    return Decision(False, RULE_NOT_LISTED, f"{_shown_host(host)}:{port} is not on the allowlist", approvable=True)


def _shown_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _shown(address: IPAddress, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
