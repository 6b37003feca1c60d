"""Network policy: the mode and the allowlist entries the egress proxy enforces.

Entry forms (case-insensitive; a trailing dot on a name is tolerated):

    host            example.com            ports 80 and 443
    host:port       example.com:8080
    *.domain        *.example.com          any subdomain, never the apex itself
    *.domain:port   *.example.com:22
    IP              192.0.2.7  2001:db8::7
    IP:port         192.0.2.7:8080  [2001:db8::7]:8080
    CIDR            10.1.0.0/16  2001:db8::/32
    CIDR:port       10.1.0.0/16:5432  [2001:db8::/32]:443

Only IP and CIDR entries can unlock loopback, private, link-local or reserved addresses
(a name pinned in settings aside); the exact rules are in `agentbox.egress.policy`. Pure data and parsing here, no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from agentbox.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORTS: tuple[int, ...] = (80, 443)
ENTRY_FORMS = (
    "valid forms: example.com, example.com:8080, *.example.com, *.example.com:443, "
    "192.0.2.7, 192.0.2.7:8080, 10.0.0.0/8, 10.0.0.0/8:5432, 2001:db8::1, [2001:db8::1]:443, "
    "[2001:db8::/32]:443 (no port means 80 and 443)"
)
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_PORT = re.compile(r"^[0-9]{1,5}$")


class NetworkMode(StrEnum):
    OFF = "off"  # no egress at all
    ALLOWLIST = "allowlist"  # only listed destinations
    LEARN = "learn"  # any public destination, each one recorded to propose an allowlist from
    OPEN = "open"  # any public destination


class EntryKind(StrEnum):
    HOST = "host"  # exactly this name
    WILDCARD = "wildcard"  # any name below this domain
    NETWORK = "network"  # an IP address (a /32 or /128) or a CIDR block


@dataclass(frozen=True)
class AllowEntry:
    """One allowlist entry. `name` is set for HOST/WILDCARD (for a wildcard: the domain under
    the `*.`), `network` for NETWORK. `port` None means the default ports 80 and 443."""

    kind: EntryKind
    name: str = ""
    network: IPNetwork | None = None
    port: int | None = None

    @property
    def ports(self) -> tuple[int, ...]:
        return DEFAULT_PORTS if self.port is None else (self.port,)

    def render(self) -> str:
        """The canonical text of the entry; parsing it gives back an equal entry."""
        if self.kind is EntryKind.HOST:
            base = self.name
        elif self.kind is EntryKind.WILDCARD:
            base = f"*.{self.name}"
        else:
            assert self.network is not None
            single = self.network.prefixlen == self.network.max_prefixlen
            base = str(self.network.network_address) if single else str(self.network)
            if self.network.version == 6 and self.port is not None:
                base = f"[{base}]"
        return base if self.port is None else f"{base}:{self.port}"

    def __str__(self) -> str:
        return self.render()

    def matches_name(self, *, host: str, port: int) -> bool:
        """Does this HOST/WILDCARD entry name `host` (already normalised) on `port`?"""
        if port not in self.ports:
            return False
        if self.kind is EntryKind.HOST:
            return host == self.name
        if self.kind is EntryKind.WILDCARD:
            return host.endswith("." + self.name)  # subdomains only, not the apex
        return False

    def covers(self, *, address: IPAddress, port: int) -> bool:
        """Does this NETWORK entry contain `address` on `port`?"""
        if self.network is None or port not in self.ports:
            return False
        return address.version == self.network.version and address in self.network


@dataclass(frozen=True)
class NetworkPolicy:
    mode: NetworkMode = NetworkMode.OFF
    allowlist: tuple[AllowEntry, ...] = ()

    def render(self) -> tuple[str, ...]:
        """The allowlist as canonical entry texts, in order."""
        return tuple(entry.render() for entry in self.allowlist)

    def with_entry(self, *, entry: AllowEntry) -> NetworkPolicy:
        """This policy plus `entry` (unchanged if it is already listed)."""
        if entry in self.allowlist:
            return self
        return NetworkPolicy(mode=self.mode, allowlist=(*self.allowlist, entry))


def normalise_host(*, host: str) -> str:
    """Lower-case, without a trailing dot, international names in their ASCII (punycode) form."""
    host = host.strip().lower()
    if host.endswith("."):
        host = host[:-1]
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return host  # left non-ASCII: validation rejects it
    return host


def is_valid_host_name(*, host: str) -> bool:
    """A DNS name of letter/digit/hyphen labels whose last label is not all digits (so that
    `1.2.3` or `300.1.1.1` is never taken for a name)."""
    labels = host.split(".")
    if not host or len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        return False
    return not labels[-1].isdigit()


def parse_allow_entry(*, text: str) -> AllowEntry:
    """Parse one allowlist entry, or raise InvalidInput saying what is wrong with it."""
    raw = text.strip()
    if not raw:
        raise _bad(text, "it is empty")
    head = raw.split(":", 1)[0]
    if "://" in raw or ("/" in head and not _looks_numeric(head)):
        raise _bad(text, "give a host name or address, not a URL or path")
    if raw == "*":
        raise _bad(text, "'*' alone is not an entry; to allow any public host use mode 'open'")
    if raw.startswith("["):
        return _parse_bracketed(text=text, raw=raw)
    if raw.count(":") > 1:  # a bare IPv6 address or block: no port possible without brackets
        return AllowEntry(kind=EntryKind.NETWORK, network=_network(text, raw))
    base, port = _split_port(text, raw)
    if _looks_numeric(base):
        return AllowEntry(kind=EntryKind.NETWORK, network=_network(text, base), port=port)
    if base.startswith("*."):
        domain = normalise_host(host=base[2:])
        if not is_valid_host_name(host=domain):
            raise _bad(text, f"{base[2:]!r} after '*.' is not a valid domain name")
        return AllowEntry(kind=EntryKind.WILDCARD, name=domain, port=port)
    if "*" in base:
        raise _bad(text, "a wildcard is only allowed as a whole first label, as in *.example.com")
    name = normalise_host(host=base)
    if not is_valid_host_name(host=name):
        raise _bad(text, f"{base!r} is neither an IP address nor a valid host name")
    return AllowEntry(kind=EntryKind.HOST, name=name, port=port)


def parse_policy(*, mode: str, allowlist: Iterable[str]) -> NetworkPolicy:
    """Build a policy from plain values (a policy file, a control request, a template)."""
    try:
        network_mode = NetworkMode(mode)
    except ValueError:
        raise InvalidInput(
            f"invalid network mode {mode!r}", hint="the mode is one of: off, allowlist, learn, open"
        ) from None
    entries: list[AllowEntry] = []
    for text in allowlist:
        if not isinstance(text, str):
            raise InvalidInput(f"invalid allowlist entry {text!r}: it is not a string", hint=ENTRY_FORMS)
        entry = parse_allow_entry(text=text)
        if entry not in entries:
            entries.append(entry)
    return NetworkPolicy(mode=network_mode, allowlist=tuple(entries))


def _parse_bracketed(*, text: str, raw: str) -> AllowEntry:
    close = raw.find("]")
    if close < 0:
        raise _bad(text, "'[' without a closing ']'")
    inner, rest = raw[1:close], raw[close + 1 :]
    if ":" not in inner:
        raise _bad(text, "brackets are only for IPv6 addresses, as in [2001:db8::1]:443")
    if rest and not rest.startswith(":"):
        raise _bad(text, f"unexpected {rest!r} after ']'")
    port = _port(text, rest[1:]) if rest else None
    return AllowEntry(kind=EntryKind.NETWORK, network=_network(text, inner), port=port)


def _split_port(text: str, raw: str) -> tuple[str, int | None]:
    if ":" not in raw:
        return raw, None
    base, port_text = raw.rsplit(":", 1)
    if not base:
        raise _bad(text, "there is a port but no host")
    return base, _port(text, port_text)


def _port(text: str, port_text: str) -> int:
    if not _PORT.match(port_text) or not 1 <= int(port_text) <= 65535:
        raise _bad(text, f"port {port_text!r} is not a number from 1 to 65535")
    return int(port_text)


def _looks_numeric(base: str) -> bool:
    """IPv4 addresses and blocks: digits, dots and one optional '/len'."""
    return bool(re.match(r"^[0-9./]+$", base))


def _network(text: str, value: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError:
        if "/" in value:
            try:
                loose = ipaddress.ip_network(value, strict=False)
            except ValueError:
                pass
            else:
                raise _bad(text, f"{value} has host bits set; did you mean {loose}?") from None
        raise _bad(text, f"{value!r} is not a valid IP address or CIDR block") from None


def _bad(text: str, why: str) -> InvalidInput:
    shown = text if text.strip() else "(empty)"
    return InvalidInput(f"invalid allowlist entry {shown!r}: {why}", hint=ENTRY_FORMS)
