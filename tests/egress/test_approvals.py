"""Holding an unlisted connection while an approver decides: allow once, allow always,
deny, no answer, nobody listening, and policy changes that decide for the approver."""

from __future__ import annotations

import asyncio

import pytest

from agentbox.egress.approvals import ApprovalBroker, ApprovalRequest, ApprovalVerdict
from agentbox.egress.records import ConnectionRecord, DecisionLog
from agentbox.model.network import NetworkPolicy
from tests.egress.conftest import (
    LoopbackConnector,
    StubResolver,
    echo_server,
    echo_through,
    make_proxy,
    open_tunnel,
    policy,
    running_proxy,
)

pytestmark = pytest.mark.timeout(30)

NAME = "new.example"
ADDRESS = "151.101.0.50"


class Approver:
    """Collects requests; the test answers them."""

    def __init__(self) -> None:
        self.requests: asyncio.Queue[ApprovalRequest] = asyncio.Queue()

    def __call__(self, request: ApprovalRequest) -> None:
        self.requests.put_nowait(request)

    async def next(self) -> ApprovalRequest:
        return await asyncio.wait_for(self.requests.get(), 10)


def setup(port: int, *, timeout: float = 10.0, live: NetworkPolicy | None = None):  # type: ignore[no-untyped-def]
    records: list[ConnectionRecord] = []
    resolver = StubResolver({NAME: [ADDRESS], "lan.example": ["10.0.0.7"]})
    connector = LoopbackConnector({(ADDRESS, 443): port})
    proxy = make_proxy(live or policy("allowlist", "listed.example"), resolver=resolver, connector=connector,
                       approvals=ApprovalBroker(timeout=timeout), decisions=DecisionLog(sink=records.append))
    return proxy, resolver, records


def test_allow_once_lets_this_connection_through_without_changing_the_policy() -> None:
    async def scenario() -> None:
        async with echo_server() as port:
            proxy, resolver, records = setup(port)
            approver = Approver()
            proxy.approvals.add_approver(approver=approver)
            async with running_proxy(proxy):
                pending = asyncio.create_task(open_tunnel(proxy.tcp_port, f"{NAME}:443"))
                request = await approver.next()
                assert (request.host, request.port, request.method, request.address) == (NAME, 443, "CONNECT", "")
                assert resolver.lookups == []  # not looked up before a person said yes
                assert proxy.approvals.answer(request_id=request.id, verdict=ApprovalVerdict.ALLOW_ONCE)
                status, _, reader, writer = await pending
                assert status == 200 and await echo_through(reader, writer, b"once") == b"once"
                assert proxy.policy.render() == ("listed.example",)
                # adding an unrelated entry must not cut the connection approved once
                assert proxy.set_policy(policy=policy("allowlist", "listed.example", "more.example")) == 0
                assert await echo_through(reader, writer, b"again") == b"again"
                writer.close()
                # the next connection asks again
                again = asyncio.create_task(open_tunnel(proxy.tcp_port, f"{NAME}:443"))
                second = await approver.next()
                proxy.approvals.answer(request_id=second.id, verdict=ApprovalVerdict.DENY)
                assert (await again)[0] == 403
        assert records[0].decision.rule == "approval:once" and records[0].address == ADDRESS

    asyncio.run(scenario())


def test_allow_always_adds_the_destination_to_the_live_policy() -> None:
    async def scenario() -> None:
        async with echo_server() as port:
            proxy, _, _ = setup(port)
            approver = Approver()
            proxy.approvals.add_approver(approver=approver)
            changes: list[NetworkPolicy] = []
            proxy.add_policy_listener(listener=changes.append)
            async with running_proxy(proxy):
                pending = asyncio.create_task(open_tunnel(proxy.tcp_port, f"{NAME}:443"))
                request = await approver.next()
                proxy.approvals.answer(request_id=request.id, verdict=ApprovalVerdict.ALLOW_ALWAYS)
                status, _, _, writer = await pending
                assert status == 200
                writer.close()
                assert proxy.policy.render() == ("listed.example", f"{NAME}:443")
                assert [c.render() for c in changes] == [("listed.example", f"{NAME}:443")]
                status, _, _, writer = await open_tunnel(proxy.tcp_port, f"{NAME}:443")  # no question now
                assert status == 200 and approver.requests.empty()
                writer.close()

    asyncio.run(scenario())


def test_deny_refuses_with_the_approval_rule() -> None:
    async def scenario() -> None:
        async with echo_server() as port:
            proxy, resolver, _ = setup(port)
            approver = Approver()
            proxy.approvals.add_approver(approver=approver)
            async with running_proxy(proxy):
                pending = asyncio.create_task(open_tunnel(proxy.tcp_port, f"{NAME}:443"))
                request = await approver.next()
                proxy.approvals.answer(request_id=request.id, verdict=ApprovalVerdict.DENY)
                status, body, _, _ = await pending
            assert status == 403 and b"approval:denied" in body
            assert resolver.lookups == []
            assert not proxy.approvals.answer(request_id=request.id, verdict=ApprovalVerdict.ALLOW_ONCE)

    asyncio.run(scenario())


def test_an_unanswered_request_is_denied_after_the_timeout() -> None:
    async def scenario() -> None:
        async with echo_server() as port:
            proxy, _, _ = setup(port, timeout=0.2)
            approver = Approver()
            proxy.approvals.add_approver(approver=approver)
            async with running_proxy(proxy):
                status, body, _, _ = await open_tunnel(proxy.tcp_port, f"{NAME}:443")
            assert status == 403 and b"approval:timeout" in body
            assert proxy.approvals.pending() == ()

    asyncio.run(scenario())


def test_with_no_approver_an_unlisted_destination_is_denied_at_once() -> None:
    async def scenario() -> None:
        async with echo_server() as port:
            proxy, resolver, _ = setup(port, timeout=600)  # a hold would outlast the test's guard
            async with running_proxy(proxy):
                status, body, _, _ = await open_tunnel(proxy.tcp_port, f"{NAME}:443")
            assert status == 403 and b"not-listed" in body
            assert resolver.lookups == []

    asyncio.run(scenario())


def test_when_the_last_approver_leaves_its_pending_requests_are_denied() -> None:
    async def scenario() -> None:
        async with echo_server() as port:
            proxy, _, _ = setup(port, timeout=600)
            approver = Approver()
            remove = proxy.approvals.add_approver(approver=approver)
            async with running_proxy(proxy):
                pending = asyncio.create_task(open_tunnel(proxy.tcp_port, f"{NAME}:443"))
                await approver.next()
                remove()
                status, body, _, _ = await pending
            assert status == 403 and b"approval:none" in body

    asyncio.run(scenario())


def test_an_approval_never_unlocks_a_private_address() -> None:
    async def scenario() -> None:
        async with echo_server() as port:
            proxy, _, _ = setup(port)
            approver = Approver()
            proxy.approvals.add_approver(approver=approver)
            async with running_proxy(proxy):
                pending = asyncio.create_task(open_tunnel(proxy.tcp_port, "lan.example:443"))
                request = await approver.next()
                proxy.approvals.answer(request_id=request.id, verdict=ApprovalVerdict.ALLOW_ALWAYS)
                status, body, _, _ = await pending
            assert status == 403 and b"blocked:private" in body
            assert proxy.policy.render() == ("listed.example",)  # nothing was added

    asyncio.run(scenario())


def test_policy_changes_settle_held_requests() -> None:
    async def scenario() -> None:
        async with echo_server() as port:
            proxy, _, _ = setup(port, timeout=600)
            approver = Approver()
            proxy.approvals.add_approver(approver=approver)
            async with running_proxy(proxy):
                held = asyncio.create_task(open_tunnel(proxy.tcp_port, f"{NAME}:443"))
                await approver.next()
                proxy.set_policy(policy=policy("allowlist", "listed.example", "unrelated.example"))
                assert len(proxy.approvals.pending()) == 1  # still a question for a person
                proxy.set_policy(policy=policy("allowlist", NAME))
                status, _, _, writer = await held
                assert status == 200
                writer.close()
                held = asyncio.create_task(open_tunnel(proxy.tcp_port, f"other-{NAME}:443"))
                await approver.next()
                proxy.set_policy(policy=policy("off"))
                status, body, _, _ = await held
                assert status == 403 and b"mode:off" in body

    asyncio.run(scenario())
