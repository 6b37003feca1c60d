"""Network mode `learn` and the allowlist proposed from a decision log."""

from __future__ import annotations

import ipaddress

import pytest

from agentbox.egress.policy import RULE_LEARN, decide
from agentbox.egress.proposal import WILDCARD_MIN, propose
from agentbox.egress.records import ConnectionRecord, Outcome
from agentbox.egress.policy import Decision
from agentbox.model.network import NetworkMode, parse_policy

PUBLIC = "93.184.215.14"


def used(host: str, port: int = 443, *, address: str = PUBLIC, allowed: bool = True,
         rule: str = RULE_LEARN) -> ConnectionRecord:
    return ConnectionRecord(time="2026-12-03T08:00:00.000+00:00", host=host, address=address, port=port,
                            method="CONNECT", decision=Decision(allowed, rule if allowed else "not-listed", "why"),
                            outcome=Outcome.COMPLETED if allowed else Outcome.DENIED, bytes_up=1, bytes_down=1,
                            duration_s=0.1)


def texts(*records: ConnectionRecord) -> tuple[str, ...]:
    return propose(records=records).render()


# -- learn mode's decisions ------------------------------------------------------------------

LEARN = parse_policy(mode="learn", allowlist=["web.agentbox.test:8080"])


def test_learn_allows_any_public_address_and_says_it_was_learned() -> None:
    verdict = decide(host="pypi.org", address=ipaddress.ip_address(PUBLIC), port=443, policy=LEARN)
    assert verdict.allowed and verdict.rule == RULE_LEARN and NetworkMode("learn") is NetworkMode.LEARN


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.2.2", "192.168.1.1", "169.254.169.254", "::1",
                                     "fe80::1", "100.64.0.1", "0.0.0.0", "::ffff:127.0.0.1", "240.0.0.1"])
def test_learn_still_refuses_what_allowlist_mode_refuses_for_safety(address: str) -> None:
    verdict = decide(host="rebound.example", address=ipaddress.ip_address(address), port=443, policy=LEARN)
    assert not verdict.allowed and verdict.rule.startswith("blocked:") and not verdict.approvable


def test_learn_treats_pinned_names_exactly_as_allowlist_mode_does() -> None:
    loopback = ipaddress.ip_address("127.0.0.1")
    for mode in ("allowlist", "learn"):
        policy = parse_policy(mode=mode, allowlist=["web.agentbox.test:8080"])
        listed = decide(host="web.agentbox.test", address=loopback, port=8080, policy=policy, pinned=True)
        other = decide(host="web.agentbox.test", address=loopback, port=8081, policy=policy, pinned=True)
        assert listed.allowed and listed.rule == "web.agentbox.test:8080", mode
        assert not other.allowed and other.rule == "blocked:loopback", mode


# -- the proposal ------------------------------------------------------------------------------

def test_each_name_and_port_used_once_and_duplicates_collapse() -> None:
    assert texts(used("pypi.org"), used("PyPI.org."), used("pypi.org"), used("git.example.com", 22)) == (
        "git.example.com:22", "pypi.org:443")


def test_both_default_ports_make_one_entry_without_a_port() -> None:
    assert texts(used("example.com", 80), used("example.com", 443), used("example.com", 8443)) == (
        "example.com", "example.com:8443")


def test_refused_connections_are_never_proposed() -> None:
    proposal = propose(records=[used("pypi.org"), used("evil.example", allowed=False),
                                used("meta.example", address="169.254.169.254", allowed=False)])
    assert proposal.render() == ("pypi.org:443",) and proposal.allowed == 1 and proposal.refused == 2


def test_many_subdomains_of_one_domain_become_a_wildcard() -> None:
    names = [f"cdn{n}.example.net" for n in range(WILDCARD_MIN)]
    proposal = propose(records=[used(name) for name in names] + [used("example.net")])
    assert proposal.render() == ("*.example.net:443", "example.net:443"), "the apex is not covered by *."
    assert proposal.entries[0].hosts == tuple(sorted(names))


def test_fewer_subdomains_stay_separate_entries() -> None:
    names = [f"cdn{n}.example.net" for n in range(WILDCARD_MIN - 1)]
    assert texts(*(used(name) for name in names)) == tuple(f"{n}:443" for n in sorted(names))


def test_no_wildcard_across_ports_or_for_a_top_level_domain() -> None:
    across = [used("a.example.org", 443), used("b.example.org", 443), used("c.example.org", 8443)]
    assert texts(*across) == ("a.example.org:443", "b.example.org:443", "c.example.org:8443")
    assert texts(used("a.com"), used("b.com"), used("c.com")) == ("a.com:443", "b.com:443", "c.com:443")


def test_names_reached_at_non_public_addresses_keep_host_entries() -> None:
    """A wildcard never unlocks a pinned loopback name: it would stop working once applied."""
    pinned = [used(f"s{n}.agentbox.test", 8080, address="127.0.0.1", rule=f"s{n}.agentbox.test:8080")
              for n in range(WILDCARD_MIN)]
    assert texts(*pinned) == tuple(f"s{n}.agentbox.test:8080" for n in range(WILDCARD_MIN))


def test_ip_literals_become_ip_entries() -> None:
    assert texts(used(PUBLIC, 443), used("[2606:2800:220:1::1]", 443, address="2606:2800:220:1::1")) == (
        "93.184.215.14:443", "[2606:2800:220:1::1]:443")


def test_the_proposal_allows_exactly_what_was_used_once_applied() -> None:
    records = [used("pypi.org"), used("files.pythonhosted.org"), used("example.com", 80),
               used("example.com", 443)] + [used(f"m{n}.cdn.example") for n in range(WILDCARD_MIN)]
    policy = parse_policy(mode="allowlist", allowlist=propose(records=records).render())
    address = ipaddress.ip_address(PUBLIC)
    for record in records:
        assert decide(host=record.host, address=address, port=record.port, policy=policy).allowed, record.host
    for host, port in (("evil.example", 443), ("pypi.org", 22), ("cdn.example", 443), ("example.com", 8080)):
        assert not decide(host=host, address=address, port=port, policy=policy).allowed, (host, port)


# -- the real proxy: learn, propose from its own log, apply ----------------------------------

def test_the_proxy_in_learn_mode_lets_public_names_out_and_its_log_proposes_exactly_them() -> None:
    import asyncio

    from agentbox.egress.records import DecisionLog
    from tests.egress.conftest import LoopbackConnector, StubResolver, echo_server, echo_through, make_proxy, \
        open_tunnel, running_proxy

    async def scenario() -> None:
        records: list[ConnectionRecord] = []
        async with echo_server() as port:
            resolver = StubResolver({"pypi.example": ["151.101.0.223"], "other.example": ["151.101.0.224"],
                                     "rebind.example": ["127.0.0.1"]})
            connector = LoopbackConnector({("151.101.0.223", 443): port, ("151.101.0.224", 443): port})
            proxy = make_proxy(parse_policy(mode="learn", allowlist=[]), resolver=resolver, connector=connector,
                               decisions=DecisionLog(sink=records.append))
            async with running_proxy(proxy):
                status, _, reader, writer = await open_tunnel(proxy.tcp_port, "pypi.example:443")
                assert status == 200 and await echo_through(reader, writer, b"x") == b"x"
                writer.close()
                status, body, _, _ = await open_tunnel(proxy.tcp_port, "rebind.example:443")
                assert status == 403 and b"blocked:loopback" in body  # learning never reaches the host
                applied = propose(records=records).render()
                assert applied == ("pypi.example:443",)
                proxy.set_policy(policy=parse_policy(mode="allowlist", allowlist=applied))
                status, _, reader, writer = await open_tunnel(proxy.tcp_port, "pypi.example:443")
                assert status == 200
                writer.close()
                status, body, _, _ = await open_tunnel(proxy.tcp_port, "other.example:443")
                assert status == 403 and b"not-listed" in body
        assert {(r.host, r.decision.rule) for r in records} == {
            ("pypi.example", RULE_LEARN), ("rebind.example", "blocked:loopback"),
            ("pypi.example", "pypi.example:443"), ("other.example", "not-listed")}

    asyncio.run(scenario())
