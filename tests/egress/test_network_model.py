"""Allowlist entries as a user writes them: what parses, what it means, what is refused and
how the refusal explains itself."""

from __future__ import annotations

import ipaddress

import pytest

from agentbox.errors import InvalidInput
from agentbox.model import template
from agentbox.model.network import (
    DEFAULT_PORTS,
    AllowEntry,
    EntryKind,
    NetworkMode,
    NetworkPolicy,
    parse_allow_entry,
    parse_policy,
)


@pytest.mark.parametrize(
    ("text", "kind", "canonical", "ports"),
    [
        ("example.com", EntryKind.HOST, "example.com", (80, 443)),
        ("Example.COM.", EntryKind.HOST, "example.com", (80, 443)),
        ("  pypi.org:8443 ", EntryKind.HOST, "pypi.org:8443", (8443,)),
        ("*.example.com", EntryKind.WILDCARD, "*.example.com", (80, 443)),
        ("*.Example.com.:22", EntryKind.WILDCARD, "*.example.com:22", (22,)),
        ("localhost:8080", EntryKind.HOST, "localhost:8080", (8080,)),
        ("bücher.example", EntryKind.HOST, "xn--bcher-kva.example", (80, 443)),
        ("192.0.2.7", EntryKind.NETWORK, "192.0.2.7", (80, 443)),
        ("127.0.0.1:8080", EntryKind.NETWORK, "127.0.0.1:8080", (8080,)),
        ("10.0.0.0/8", EntryKind.NETWORK, "10.0.0.0/8", (80, 443)),
        ("10.0.0.0/8:5432", EntryKind.NETWORK, "10.0.0.0/8:5432", (5432,)),
        ("2001:DB8::1", EntryKind.NETWORK, "2001:db8::1", (80, 443)),
        ("[2001:db8::1]", EntryKind.NETWORK, "2001:db8::1", (80, 443)),
        ("[2001:db8::1]:443", EntryKind.NETWORK, "[2001:db8::1]:443", (443,)),
        ("2001:db8::/32", EntryKind.NETWORK, "2001:db8::/32", (80, 443)),
        ("[2001:db8::/32]:8443", EntryKind.NETWORK, "[2001:db8::/32]:8443", (8443,)),
    ],
)
def test_valid_entries_parse_to_their_canonical_form(
    text: str, kind: EntryKind, canonical: str, ports: tuple[int, ...]
) -> None:
    entry = parse_allow_entry(text=text)
    assert entry.kind is kind
    assert str(entry) == entry.render() == canonical
    assert entry.ports == ports
    assert parse_allow_entry(text=canonical) == entry  # the canonical text reads back the same


def test_default_ports_are_http_and_https() -> None:
    assert DEFAULT_PORTS == (80, 443)
    assert parse_allow_entry(text="example.com").port is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("*", "use mode 'open'"),
        ("https://example.com", "not a URL or path"),
        ("example.com/path", "not a URL or path"),
        ("exa mple.com", "neither an IP address nor a valid host name"),
        ("under_score.com", "neither an IP address nor a valid host name"),
        ("-bad.com", "neither an IP address nor a valid host name"),
        ("a..b", "neither an IP address nor a valid host name"),
        ("x" * 64 + ".com", "neither an IP address nor a valid host name"),
        ("example.com:0", "port '0' is not a number from 1 to 65535"),
        ("example.com:65536", "port '65536' is not a number from 1 to 65535"),
        ("example.com:http", "port 'http' is not a number from 1 to 65535"),
        ("example.com:", "port '' is not a number"),
        (":443", "there is a port but no host"),
        ("foo*.example.com", "only allowed as a whole first label"),
        ("a.*.example.com", "only allowed as a whole first label"),
        ("*.", "after '*.' is not a valid domain name"),
        ("*.10.0.0.1", "after '*.' is not a valid domain name"),
        ("300.1.1.1", "not a valid IP address or CIDR block"),
        ("1.2.3", "not a valid IP address or CIDR block"),
        ("10.1.2.3/8", "has host bits set; did you mean 10.0.0.0/8?"),
        ("10.0.0.0/33", "not a valid IP address or CIDR block"),
        ("[2001:db8::1", "without a closing ']'"),
        ("[example.com]:80", "brackets are only for IPv6"),
        ("[2001:db8::1]443", "unexpected '443' after ']'"),
        ("[2001:db8::1]:99999", "not a number from 1 to 65535"),
    ],
)
def test_bad_entries_are_refused_with_a_reason_and_the_valid_forms(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_allow_entry(text=text)
    assert message in caught.value.message
    assert "invalid allowlist entry" in caught.value.message
    assert caught.value.hint is not None and "*.example.com" in caught.value.hint


def test_name_matching_is_exact_for_hosts_and_subdomain_only_for_wildcards() -> None:
    host = parse_allow_entry(text="example.com")
    wildcard = parse_allow_entry(text="*.example.com:443")
    assert host.matches_name(host="example.com", port=443)
    assert not host.matches_name(host="www.example.com", port=443)
    assert not host.matches_name(host="example.com", port=22)
    assert wildcard.matches_name(host="a.example.com", port=443)
    assert wildcard.matches_name(host="a.b.example.com", port=443)
    assert not wildcard.matches_name(host="example.com", port=443)  # not the apex
    assert not wildcard.matches_name(host="badexample.com", port=443)
    assert not wildcard.matches_name(host="a.example.com", port=80)  # an explicit port is the only port


def test_network_entries_cover_addresses_of_their_own_family_and_port() -> None:
    block = parse_allow_entry(text="10.1.0.0/16:5432")
    assert block.covers(address=ipaddress.ip_address("10.1.200.3"), port=5432)
    assert not block.covers(address=ipaddress.ip_address("10.2.0.1"), port=5432)
    assert not block.covers(address=ipaddress.ip_address("10.1.0.1"), port=5433)
    assert not block.covers(address=ipaddress.ip_address("::ffff:a01:1"), port=5432)  # callers unmap first
    assert not parse_allow_entry(text="example.com").covers(address=ipaddress.ip_address("10.1.0.1"), port=80)


def test_a_policy_parses_its_mode_and_entries_and_drops_duplicates() -> None:
    parsed = parse_policy(mode="allowlist", allowlist=["Example.com", "example.com.", "10.0.0.0/8:22"])
    assert parsed.mode is NetworkMode.ALLOWLIST
    assert parsed.render() == ("example.com", "10.0.0.0/8:22")
    assert parsed == NetworkPolicy(mode=NetworkMode.ALLOWLIST, allowlist=parsed.allowlist)


def test_a_policy_with_an_unknown_mode_or_entry_is_refused() -> None:
    with pytest.raises(InvalidInput, match="invalid network mode 'closed'") as caught:
        parse_policy(mode="closed", allowlist=[])
    assert caught.value.hint == "the mode is one of: off, allowlist, learn, open"
    with pytest.raises(InvalidInput, match="invalid allowlist entry 'exa mple'"):
        parse_policy(mode="open", allowlist=["exa mple"])
    with pytest.raises(InvalidInput, match="it is not a string"):
        parse_policy(mode="open", allowlist=[443])  # type: ignore[list-item]


def test_with_entry_adds_once_and_leaves_the_original_alone() -> None:
    base = parse_policy(mode="allowlist", allowlist=["example.com"])
    entry = AllowEntry(kind=EntryKind.HOST, name="pypi.org", port=443)
    added = base.with_entry(entry=entry)
    assert added.render() == ("example.com", "pypi.org:443")
    assert added.with_entry(entry=entry) == added
    assert base.render() == ("example.com",)


def test_templates_keep_naming_the_same_network_mode() -> None:
    assert template.NetworkMode is NetworkMode
    assert template.PolicyDefaults().network is NetworkMode.OFF
