"""The decision engine: what each mode allows, and that nothing private, loopback or
link-local gets out unless an entry names it the strict way."""

from __future__ import annotations

import ipaddress

import pytest

from agentbox.egress.policy import AddressClass, classify_address, decide, prejudge
from tests.egress.conftest import policy

PUBLIC = ipaddress.ip_address("93.184.216.34")
PUBLIC6 = ipaddress.ip_address("2606:2800:220:1:248:1893:25c8:1946")


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("93.184.216.34", AddressClass.PUBLIC),
        ("2606:2800:220:1:248:1893:25c8:1946", AddressClass.PUBLIC),
        ("127.0.0.1", AddressClass.LOOPBACK),
        ("127.8.9.10", AddressClass.LOOPBACK),
        ("::1", AddressClass.LOOPBACK),
        ("::ffff:127.0.0.1", AddressClass.LOOPBACK),  # IPv4-mapped: judged as the IPv4 address
        ("10.1.2.3", AddressClass.PRIVATE),
        ("172.16.0.1", AddressClass.PRIVATE),
        ("172.31.255.254", AddressClass.PRIVATE),
        ("192.168.1.1", AddressClass.PRIVATE),
        ("fd00::1", AddressClass.PRIVATE),
        ("100.64.0.1", AddressClass.SHARED),
        ("100.127.255.254", AddressClass.SHARED),
        ("169.254.169.254", AddressClass.LINK_LOCAL),  # cloud metadata
        ("fe80::1", AddressClass.LINK_LOCAL),
        ("224.0.0.1", AddressClass.MULTICAST),
        ("ff02::1", AddressClass.MULTICAST),
        ("0.0.0.0", AddressClass.UNSPECIFIED),
        ("::", AddressClass.UNSPECIFIED),
        ("0.1.2.3", AddressClass.RESERVED),
        ("192.0.2.1", AddressClass.RESERVED),  # documentation
        ("198.18.0.1", AddressClass.RESERVED),  # benchmarking
        ("240.0.0.1", AddressClass.RESERVED),
        ("255.255.255.255", AddressClass.RESERVED),
        ("2001:db8::1", AddressClass.RESERVED),
        ("fec0::1", AddressClass.RESERVED),  # site-local
        ("2002:7f00:1::1", AddressClass.RESERVED),  # 6to4 wrapping 127.0.0.1
        ("64:ff9b::a9fe:a9fe", AddressClass.RESERVED),  # NAT64 wrapping 169.254.169.254
        ("64:ff9b::5db8:d822", AddressClass.PUBLIC),  # NAT64 wrapping a public address
        ("172.32.0.1", AddressClass.PUBLIC),  # just outside 172.16/12
        ("100.128.0.1", AddressClass.PUBLIC),  # just outside 100.64/10
    ],
)
def test_addresses_are_classified(address: str, kind: AddressClass) -> None:
    assert classify_address(address=ip(address)) is kind


def test_mode_off_denies_everything_even_listed_destinations() -> None:
    live = policy("off", "example.com", "127.0.0.1:8080")
    for host, address, port in (("example.com", PUBLIC, 443), ("127.0.0.1", ip("127.0.0.1"), 8080)):
        decision = decide(host=host, address=address, port=port, policy=live)
        assert (decision.allowed, decision.rule, decision.approvable) == (False, "mode:off", False)


def test_mode_open_allows_any_public_address_on_any_port() -> None:
    live = policy("open")
    assert decide(host="example.com", address=PUBLIC, port=22, policy=live).rule == "mode:open"
    assert decide(host=str(PUBLIC6), address=PUBLIC6, port=443, policy=live).allowed


@pytest.mark.parametrize("mode", ["open", "allowlist"])
@pytest.mark.parametrize(
    "address", ["127.0.0.1", "::1", "10.0.0.5", "100.64.1.1", "169.254.169.254", "fe80::1", "224.0.0.1", "0.0.0.0",
                "192.0.2.1", "::ffff:10.0.0.1"],
)
def test_non_public_addresses_are_refused_in_every_mode(mode: str, address: str) -> None:
    decision = decide(host="example.com", address=ip(address), port=443, policy=policy(mode, "*.com"))
    assert not decision.allowed and not decision.approvable
    assert decision.rule.startswith("blocked:")
    assert "only an IP or CIDR entry naming it can allow it" in decision.reason


def test_allowlist_allows_listed_names_on_their_ports_only() -> None:
    live = policy("allowlist", "example.com", "api.example.org:8443")
    assert decide(host="example.com", address=PUBLIC, port=443, policy=live).rule == "example.com"
    assert decide(host="example.com", address=PUBLIC, port=80, policy=live).allowed
    assert not decide(host="example.com", address=PUBLIC, port=8080, policy=live).allowed
    assert decide(host="api.example.org", address=PUBLIC, port=8443, policy=live).rule == "api.example.org:8443"
    assert not decide(host="api.example.org", address=PUBLIC, port=443, policy=live).allowed


def test_unlisted_public_destinations_are_not_listed_and_approvable() -> None:
    decision = decide(host="other.example", address=PUBLIC, port=443, policy=policy("allowlist", "example.com"))
    assert (decision.allowed, decision.rule, decision.approvable) == (False, "not-listed", True)
    assert decision.reason == "other.example:443 is not on the allowlist"


def test_names_match_case_insensitively_and_with_a_trailing_dot() -> None:
    live = policy("allowlist", "Example.com")
    assert decide(host="EXAMPLE.com.", address=PUBLIC, port=443, policy=live).allowed


def test_wildcards_match_subdomains_but_not_the_apex() -> None:
    live = policy("allowlist", "*.example.com")
    assert decide(host="www.example.com", address=PUBLIC, port=443, policy=live).rule == "*.example.com"
    assert decide(host="a.b.example.com", address=PUBLIC, port=80, policy=live).allowed
    assert not decide(host="example.com", address=PUBLIC, port=443, policy=live).allowed
    assert not decide(host="evilexample.com", address=PUBLIC, port=443, policy=live).allowed


def test_ip_entries_match_asked_ip_literals() -> None:
    live = policy("allowlist", "93.184.216.0/24:443", "[2606:2800:220:1::/64]:443")
    assert decide(host="93.184.216.34", address=PUBLIC, port=443, policy=live).rule == "93.184.216.0/24:443"
    assert decide(host=f"[{PUBLIC6}]", address=PUBLIC6, port=443, policy=live).allowed
    assert not decide(host="93.184.216.34", address=PUBLIC, port=80, policy=live).allowed


def test_a_host_entry_never_unlocks_loopback_for_a_name_that_resolves_there() -> None:
    live = policy("allowlist", "evil.example:8080")
    decision = decide(host="evil.example", address=ip("127.0.0.1"), port=8080, policy=live)
    assert (decision.allowed, decision.rule) == (False, "blocked:loopback")
    assert "127.0.0.1:8080 is a loopback address" in decision.reason


def test_a_wildcard_never_unlocks_a_private_address() -> None:
    live = policy("allowlist", "*.corp.example")
    assert decide(host="git.corp.example", address=ip("10.0.0.5"), port=443, policy=live).rule == "blocked:private"


def test_a_name_entry_never_unlocks_the_private_address_its_name_resolves_to() -> None:
    # DNS rebinding: a listed name re-pointed at the LAN must not reach the LAN.
    live = policy("allowlist", "git.corp.example:443")
    decision = decide(host="git.corp.example", address=ip("10.0.0.5"), port=443, policy=live)
    assert (decision.allowed, decision.rule) == (False, "blocked:private")
    assert "only an IP or CIDR entry naming it can allow it" in decision.reason
    assert "a name entry allows public addresses only" in decision.reason
    assert not decide(host="git.corp.example", address=ip("100.64.0.9"), port=443, policy=live).allowed
    assert decide(host="git.corp.example", address=ip("151.101.0.1"), port=443, policy=live).allowed


def test_a_private_address_needs_an_ip_or_cidr_entry_even_with_the_name_listed() -> None:
    live = policy("allowlist", "git.corp.example:443", "10.0.0.0/24:443")
    assert decide(host="git.corp.example", address=ip("10.0.0.5"), port=443, policy=live).rule == "10.0.0.0/24:443"


def test_a_pinned_name_entry_unlocks_the_address_the_settings_pin_it_to() -> None:
    live = policy("allowlist", "web.agentbox.test:8080", "nas.lan:443")
    assert decide(host="web.agentbox.test", address=ip("127.0.0.1"), port=8080, policy=live, pinned=True).allowed
    assert decide(host="nas.lan", address=ip("192.168.1.10"), port=443, policy=live, pinned=True).allowed
    assert not decide(host="nas.lan", address=ip("192.168.1.10"), port=22, policy=live, pinned=True).allowed
    # A pin is the user's word for an address, but metadata still needs an IP entry.
    assert not decide(host="nas.lan", address=ip("169.254.169.254"), port=443, policy=live, pinned=True).allowed
    assert not decide(host="web.agentbox.test", address=ip("127.0.0.1"), port=8080, policy=live).allowed
    wildcard = policy("allowlist", "*.agentbox.test:8080")
    assert not decide(host="web.agentbox.test", address=ip("127.0.0.1"), port=8080, policy=wildcard,
                      pinned=True).allowed


def test_a_pinned_name_is_also_allowed_by_an_ip_entry_for_its_address() -> None:
    live = policy("allowlist", "127.0.0.1:8080", "203.0.113.5:443")
    assert decide(host="web.agentbox.test", address=ip("127.0.0.1"), port=8080, policy=live,
                  pinned=True).rule == "127.0.0.1:8080"
    assert decide(host="api.test", address=ip("151.101.0.1"), port=443, policy=policy("allowlist", "151.101.0.1:443"),
                  pinned=True).allowed
    assert not decide(host="api.test", address=ip("151.101.0.1"), port=443,
                      policy=policy("allowlist", "151.101.0.1:443")).allowed  # resolved, not pinned: by name only


def test_a_host_entry_never_unlocks_link_local_metadata() -> None:
    live = policy("allowlist", "metadata.google.internal")
    decision = decide(host="metadata.google.internal", address=ip("169.254.169.254"), port=80, policy=live)
    assert (decision.allowed, decision.rule) == (False, "blocked:link-local")


def test_not_even_a_loopback_name_entry_unlocks_loopback() -> None:
    live = policy("allowlist", "localhost:8080", "app.localhost:9000")
    for host, address, port in (("localhost", "127.0.0.1", 8080), ("localhost", "::1", 8080),
                                ("app.localhost", "127.0.0.1", 9000), ("localhost", "10.0.0.1", 8080)):
        assert not decide(host=host, address=ip(address), port=port, policy=live).allowed
    assert decide(host="localhost", address=ip("127.0.0.1"), port=8080,
                  policy=policy("allowlist", "127.0.0.1:8080")).rule == "127.0.0.1:8080"


def test_an_ip_entry_unlocks_exactly_its_address_and_port() -> None:
    live = policy("allowlist", "127.0.0.1:8080")
    assert decide(host="127.0.0.1", address=ip("127.0.0.1"), port=8080, policy=live).rule == "127.0.0.1:8080"
    assert not decide(host="127.0.0.1", address=ip("127.0.0.1"), port=8081, policy=live).allowed
    assert not decide(host="127.0.0.2", address=ip("127.0.0.2"), port=8080, policy=live).allowed
    assert decide(host="::ffff:127.0.0.1", address=ip("::ffff:127.0.0.1"), port=8080, policy=live).allowed


def test_in_open_mode_an_ip_entry_still_unlocks_a_named_private_address() -> None:
    live = policy("open", "10.0.0.0/8:5432")
    assert decide(host="10.1.2.3", address=ip("10.1.2.3"), port=5432, policy=live).rule == "10.0.0.0/8:5432"
    assert not decide(host="10.1.2.3", address=ip("10.1.2.3"), port=5433, policy=live).allowed


def test_names_are_only_worth_resolving_when_they_could_be_allowed() -> None:
    listed = policy("allowlist", "example.com", "*.example.org:22")
    assert prejudge(host="example.com", port=443, policy=listed) is None
    assert prejudge(host="a.example.org", port=22, policy=listed) is None
    assert prejudge(host="93.184.216.34", port=443, policy=listed) is None  # literals: nothing to look up
    unlisted = prejudge(host="exfil-data.attacker.example", port=443, policy=listed)
    assert unlisted is not None and (unlisted.rule, unlisted.approvable) == ("not-listed", True)
    off = prejudge(host="example.com", port=443, policy=policy("off", "example.com"))
    assert off is not None and (off.rule, off.approvable) == ("mode:off", False)
    assert prejudge(host="anything.example", port=1, policy=policy("open")) is None
