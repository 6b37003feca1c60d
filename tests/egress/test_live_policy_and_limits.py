"""Policy swaps while connections are open, and the limits that keep one bad client from
hurting the others."""

from __future__ import annotations

import asyncio
import resource

import pytest

from agentbox.egress.proxy import ProxyLimits
from agentbox.egress.records import ConnectionRecord, DecisionLog, Outcome
from tests.egress.conftest import (
    closed_by_peer,
    echo_server,
    echo_through,
    http_request,
    make_proxy,
    open_tunnel,
    policy,
    running_proxy,
    until,
)

pytestmark = pytest.mark.timeout(60)


def test_a_policy_swap_applies_to_the_next_connection() -> None:
    async def scenario() -> None:
        async with echo_server() as port:
            proxy = make_proxy(policy("allowlist"))
            async with running_proxy(proxy):
                assert (await open_tunnel(proxy.tcp_port, f"127.0.0.1:{port}"))[0] == 403
                proxy.set_policy(policy=policy("allowlist", f"127.0.0.1:{port}"))
                status, _, reader, writer = await open_tunnel(proxy.tcp_port, f"127.0.0.1:{port}")
                assert status == 200
                writer.close()

    asyncio.run(scenario())


def test_switching_to_off_cuts_every_open_tunnel() -> None:
    async def scenario() -> None:
        records: list[ConnectionRecord] = []
        async with echo_server() as port:
            proxy = make_proxy(policy("allowlist", f"127.0.0.1:{port}"), decisions=DecisionLog(sink=records.append))
            async with running_proxy(proxy):
                tunnels = [await open_tunnel(proxy.tcp_port, f"127.0.0.1:{port}") for _ in range(3)]
                for _, _, reader, writer in tunnels:
                    assert await echo_through(reader, writer, b"before") == b"before"
                assert proxy.set_policy(policy=policy("off")) == 3
                for _, _, reader, _ in tunnels:
                    assert await closed_by_peer(reader)
                await until(lambda: len(records) == 3)
        assert {(r.outcome, r.error.startswith("policy changed: mode:off")) for r in records} == {(Outcome.CUT, True)}

    asyncio.run(scenario())


def test_removing_an_entry_cuts_only_the_tunnels_it_allowed() -> None:
    async def scenario() -> None:
        async with echo_server() as kept_port, echo_server() as dropped_port:
            both = policy("allowlist", f"127.0.0.1:{kept_port}", f"127.0.0.1:{dropped_port}")
            proxy = make_proxy(both)
            async with running_proxy(proxy):
                _, _, kept_r, kept_w = await open_tunnel(proxy.tcp_port, f"127.0.0.1:{kept_port}")
                _, _, dropped_r, dropped_w = await open_tunnel(proxy.tcp_port, f"127.0.0.1:{dropped_port}")
                assert proxy.set_policy(policy=policy("allowlist", f"127.0.0.1:{kept_port}")) == 1
                assert await closed_by_peer(dropped_r)
                assert await echo_through(kept_r, kept_w, b"still here") == b"still here"
                kept_w.close()
                dropped_w.close()

    asyncio.run(scenario())


def test_garbage_oversized_and_slow_clients_do_not_disturb_an_open_tunnel() -> None:
    async def scenario() -> None:
        records: list[ConnectionRecord] = []
        async with echo_server() as port:
            limits = ProxyLimits(max_header_bytes=4096, header_timeout=0.5)
            proxy = make_proxy(policy("allowlist", f"127.0.0.1:{port}"), limits=limits,
                               decisions=DecisionLog(sink=records.append))
            async with running_proxy(proxy):
                _, _, tunnel_r, tunnel_w = await open_tunnel(proxy.tcp_port, f"127.0.0.1:{port}")
                answers = await asyncio.gather(
                    http_request(proxy.tcp_port, b"\x16\x03\x01\x02\x00garbage\r\n\r\n"),
                    http_request(proxy.tcp_port, b"GET /relative HTTP/1.1\r\n\r\n"),
                    http_request(proxy.tcp_port, b"CONNECT example.com HTTP/1.1\r\n\r\n"),
                    http_request(proxy.tcp_port, b"CONNECT bad_host!:443 HTTP/1.1\r\n\r\n"),
                    http_request(proxy.tcp_port, b"GET ftp://example.com/ HTTP/1.1\r\n\r\n"),
                    http_request(proxy.tcp_port, b"GET http://example.com/ HTTP/1.1\r\nno colon here\r\n\r\n"),
                    http_request(proxy.tcp_port, b"GET http://example.com/ HTTP/1.1\r\nX-A: a\rGET /x\r\n\r\n"),
                    http_request(proxy.tcp_port, b"CONNECT x.example:443 HTTP/1.1\r\nX-Big: "
                                 + b"a" * 8000 + b"\r\n\r\n"),
                    http_request(proxy.tcp_port, b"CONNECT x.example:443 HTTP/1.1\r\n"
                                 + b"X-Many: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n" * 200 + b"\r\n"),
                    http_request(proxy.tcp_port, b"CONNECT x.example:443 HTTP/1.1\r\nX-Slow: "),  # never ends
                )
                assert [status for status, _, _ in answers] == [400, 400, 400, 400, 400, 400, 400, 431, 431, 408]
                assert b"absolute http:// URI" in answers[1][2]
                assert await echo_through(tunnel_r, tunnel_w, b"unharmed") == b"unharmed"
                tunnel_w.close()
                await until(lambda: len(records) == 11)
        assert sum(r.outcome is Outcome.BAD_REQUEST for r in records) == 10

    asyncio.run(scenario())


def test_a_client_that_connects_and_leaves_is_recorded_without_an_answer() -> None:
    async def scenario() -> None:
        records: list[ConnectionRecord] = []
        proxy = make_proxy(policy("open"), decisions=DecisionLog(sink=records.append))
        async with running_proxy(proxy):
            _, writer = await asyncio.open_connection("127.0.0.1", proxy.tcp_port)
            writer.close()
            await until(lambda: len(records) == 1)
        assert (records[0].outcome, records[0].host, records[0].method) == (Outcome.BAD_REQUEST, "", "")

    asyncio.run(scenario())


def test_two_hundred_concurrent_tunnels_all_succeed() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:  # four descriptors per tunnel live in this one test process
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))

    async def one(proxy_port: int, port: int, n: int) -> bytes:
        status, _, reader, writer = await open_tunnel(proxy_port, f"127.0.0.1:{port}")
        assert status == 200
        payload = f"tunnel {n} ".encode() * 100
        try:
            return await echo_through(reader, writer, payload)
        finally:
            writer.close()

    async def scenario() -> None:
        async with echo_server() as port:
            proxy = make_proxy(policy("allowlist", f"127.0.0.1:{port}"))
            async with running_proxy(proxy):
                results = await asyncio.gather(*(one(proxy.tcp_port, port, n) for n in range(200)))
        assert results == [f"tunnel {n} ".encode() * 100 for n in range(200)]

    asyncio.run(scenario())


def test_connections_over_the_limit_get_503_and_the_others_carry_on() -> None:
    async def scenario() -> None:
        async with echo_server() as port:
            proxy = make_proxy(policy("allowlist", f"127.0.0.1:{port}"), limits=ProxyLimits(max_connections=2))
            async with running_proxy(proxy):
                first = await open_tunnel(proxy.tcp_port, f"127.0.0.1:{port}")
                second = await open_tunnel(proxy.tcp_port, f"127.0.0.1:{port}")
                status, body, _, _ = await open_tunnel(proxy.tcp_port, f"127.0.0.1:{port}")
                assert status == 503 and b"too many connections" in body
                assert await echo_through(first[2], first[3], b"1") == b"1"
                first[3].close()
                await until(lambda: proxy.open_connections == 1)
                third = await open_tunnel(proxy.tcp_port, f"127.0.0.1:{port}")
                assert third[0] == 200
                for tunnel in (second, third):
                    tunnel[3].close()

    asyncio.run(scenario())


def test_closing_the_proxy_cuts_open_tunnels() -> None:
    async def scenario() -> None:
        async with echo_server() as port:
            proxy = make_proxy(policy("allowlist", f"127.0.0.1:{port}"))
            await proxy.start(tcp_port=0)
            _, _, reader, writer = await open_tunnel(proxy.tcp_port, f"127.0.0.1:{port}")
            await proxy.close()
            assert await closed_by_peer(reader)
            assert proxy.open_connections == 0
            writer.close()

    asyncio.run(scenario())

