"""The proxy end to end on 127.0.0.1: tunnels and plain HTTP reach local test servers when
the policy allows, are refused with a 403 naming the rule when it does not, and every
connection leaves a decision record."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import stat
from pathlib import Path

import pytest

from agentbox.egress.records import ConnectionRecord, DecisionLog, Outcome
from tests.egress.conftest import (
    LoopbackConnector,
    StubResolver,
    closed_by_peer,
    echo_server,
    echo_through,
    http_origin,
    http_request,
    make_proxy,
    open_tunnel,
    policy,
    read_response,
    running_proxy,
)

pytestmark = pytest.mark.timeout(30)


def collecting_log() -> tuple[DecisionLog, list[ConnectionRecord]]:
    records: list[ConnectionRecord] = []
    return DecisionLog(sink=records.append), records


def test_connect_tunnel_reaches_a_server_allowed_by_ip_entry_and_is_logged() -> None:
    async def scenario() -> None:
        log, records = collecting_log()
        async with echo_server() as port:
            proxy = make_proxy(policy("allowlist", f"127.0.0.1:{port}"), decisions=log)
            async with running_proxy(proxy):
                status, _, reader, writer = await open_tunnel(proxy.tcp_port, f"127.0.0.1:{port}")
                assert status == 200
                assert await echo_through(reader, writer, b"hello through the tunnel") == b"hello through the tunnel"
                writer.write_eof()
                assert await closed_by_peer(reader)
                writer.close()
                await asyncio.sleep(0)
        record = records[-1]
        assert (record.host, record.address, record.port, record.method) == ("127.0.0.1", "127.0.0.1", port, "CONNECT")
        assert (record.decision.allowed, record.decision.rule, record.outcome) == (True, f"127.0.0.1:{port}",
                                                                                  Outcome.COMPLETED)
        assert (record.bytes_up, record.bytes_down) == (24, 24)
        assert record.time.endswith("+00:00") and record.duration_s >= 0

    asyncio.run(scenario())


def test_plain_http_is_forwarded_in_origin_form_without_hop_by_hop_headers() -> None:
    async def scenario() -> None:
        async with http_origin() as origin:
            proxy = make_proxy(policy("allowlist", f"127.0.0.1:{origin.port}"))
            async with running_proxy(proxy):
                body = b'{"q": 1}'
                status, headers, answer = await http_request(proxy.tcp_port, (
                    f"POST http://127.0.0.1:{origin.port}/api/items?x=1 HTTP/1.1\r\n"
                    f"Host: wrong.example\r\nProxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\n"
                    f"Connection: X-Drop-Me\r\nX-Drop-Me: 1\r\nX-Kept: yes\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode() + body)
        assert status == 200
        assert headers["connection"] == "close"
        assert "keep-alive" not in headers and "x-secret" not in headers  # the origin's hop-by-hop ones
        seen = json.loads(answer)
        assert seen["request_line"] == "POST /api/items?x=1 HTTP/1.1"
        sent = {name.lower(): value for name, value in seen["headers"]}
        assert sent["host"] == f"127.0.0.1:{origin.port}"
        assert sent["x-kept"] == "yes" and sent["connection"] == "close"
        assert not {"proxy-authorization", "proxy-connection", "x-drop-me"} & set(sent)
        assert seen["body"] == '{"q": 1}'

    asyncio.run(scenario())


def test_a_listed_name_is_resolved_by_the_proxy_and_its_judged_address_is_the_one_connected() -> None:
    async def scenario() -> None:
        log, records = collecting_log()
        async with echo_server() as port:
            resolver = StubResolver({"pypi.example": ["151.101.0.223"]})
            connector = LoopbackConnector({("151.101.0.223", 443): port})
            proxy = make_proxy(policy("allowlist", "pypi.example"), resolver=resolver, connector=connector,
                               decisions=log)
            async with running_proxy(proxy):
                status, _, reader, writer = await open_tunnel(proxy.tcp_port, "PyPI.example.:443")
                assert status == 200
                assert await echo_through(reader, writer, b"x") == b"x"
                writer.close()
        assert resolver.lookups == ["pypi.example"]
        assert connector.attempts == [("151.101.0.223", 443)]
        assert (records[-1].address, records[-1].decision.rule) == ("151.101.0.223", "pypi.example")

    asyncio.run(scenario())


def test_refusals_are_403_with_the_rule_and_unlisted_names_are_never_looked_up() -> None:
    async def scenario() -> None:
        log, records = collecting_log()
        resolver = StubResolver({"other.example": ["93.184.216.34"]})
        connector = LoopbackConnector()
        proxy = make_proxy(policy("allowlist", "example.com"), resolver=resolver, connector=connector, decisions=log)
        async with running_proxy(proxy):
            status, body, _, _ = await open_tunnel(proxy.tcp_port, "other.example:443")
            assert status == 403
            assert body == b"agentbox egress: denied by rule not-listed: other.example:443 is not on the allowlist\n"
            status, _, text = await http_request(proxy.tcp_port, b"GET http://other.example/ HTTP/1.1\r\n\r\n")
            assert status == 403 and b"not-listed" in text
        assert resolver.lookups == [] and connector.attempts == []
        assert [(r.method, r.decision.rule, r.outcome) for r in records] == [
            ("CONNECT", "not-listed", Outcome.DENIED), ("HTTP", "not-listed", Outcome.DENIED)]

    asyncio.run(scenario())


def test_a_listed_name_that_resolves_to_loopback_is_refused() -> None:
    async def scenario() -> None:
        async with echo_server() as port:
            resolver = StubResolver({"rebind.example": ["127.0.0.1"]})
            connector = LoopbackConnector()
            proxy = make_proxy(policy("allowlist", f"rebind.example:{port}"), resolver=resolver, connector=connector)
            async with running_proxy(proxy):
                status, body, _, _ = await open_tunnel(proxy.tcp_port, f"rebind.example:{port}")
            assert status == 403
            assert b"blocked:loopback" in body and b"127.0.0.1" in body
            assert connector.attempts == []  # refused before any connection was made

    asyncio.run(scenario())


def test_a_listed_name_that_resolves_to_a_lan_address_is_refused() -> None:
    async def scenario() -> None:
        async with echo_server() as port:
            resolver = StubResolver({"rebind.example": ["192.168.1.1"]})
            connector = LoopbackConnector({("192.168.1.1", port): port})
            proxy = make_proxy(policy("allowlist", f"rebind.example:{port}"), resolver=resolver, connector=connector)
            async with running_proxy(proxy):
                status, body, _, _ = await open_tunnel(proxy.tcp_port, f"rebind.example:{port}")
            assert status == 403
            assert b"blocked:private" in body and b"name entry allows public addresses only" in body
            assert connector.attempts == []

    asyncio.run(scenario())


@pytest.mark.parametrize("entry", ["127.0.0.1:{port}", "web.agentbox.test:{port}"])
def test_a_pinned_name_reaches_its_loopback_address_by_an_ip_or_a_name_entry(entry: str) -> None:
    async def scenario() -> None:
        log, records = collecting_log()
        async with echo_server() as port:
            resolver = StubResolver()
            proxy = make_proxy(policy("allowlist", entry.format(port=port)), resolver=resolver, decisions=log,
                               pinned_hosts={"web.agentbox.test": ipaddress.ip_address("127.0.0.1")})
            async with running_proxy(proxy):
                status, body, reader, writer = await open_tunnel(proxy.tcp_port, f"web.agentbox.test:{port}")
                assert status == 200, body
                assert await echo_through(reader, writer, b"pinned") == b"pinned"
                writer.close()
            assert resolver.lookups == []  # a pinned name is never looked up
        record = records[-1]
        assert (record.host, record.address, record.decision.rule) == ("web.agentbox.test", "127.0.0.1",
                                                                       entry.format(port=port))

    asyncio.run(scenario())


def test_mixed_results_connect_only_to_the_permitted_address() -> None:
    async def scenario() -> None:
        async with echo_server() as port:
            resolver = StubResolver({"dual.example": ["127.0.0.1", "10.0.0.9", "151.101.0.1"]})
            connector = LoopbackConnector({("151.101.0.1", 443): port})
            proxy = make_proxy(policy("open"), resolver=resolver, connector=connector)
            async with running_proxy(proxy):
                status, _, reader, writer = await open_tunnel(proxy.tcp_port, "dual.example:443")
                assert status == 200 and await echo_through(reader, writer, b"ok") == b"ok"
                writer.close()
            assert connector.attempts == [("151.101.0.1", 443)]

    asyncio.run(scenario())


@pytest.mark.parametrize("target", ["127.0.0.1", "[::1]", "169.254.169.254", "10.0.0.1", "0.0.0.0"])
def test_open_mode_refuses_special_addresses_asked_directly(target: str) -> None:
    async def scenario() -> None:
        connector = LoopbackConnector()
        proxy = make_proxy(policy("open"), connector=connector)
        async with running_proxy(proxy):
            status, body, _, _ = await open_tunnel(proxy.tcp_port, f"{target}:80")
        assert status == 403 and b"blocked:" in body
        assert connector.attempts == []

    asyncio.run(scenario())


def test_names_that_do_not_resolve_and_unreachable_destinations_get_502() -> None:
    async def scenario() -> None:
        log, records = collecting_log()
        proxy = make_proxy(policy("open"), resolver=StubResolver({"down.example": ["151.101.0.2"]}), decisions=log)
        async with running_proxy(proxy):
            status, body, _, _ = await open_tunnel(proxy.tcp_port, "nxdomain.example:443")
            assert status == 502 and b"cannot resolve nxdomain.example" in body
            status, body, _, _ = await open_tunnel(proxy.tcp_port, "down.example:443")
            assert status == 502 and b"cannot connect to down.example:443" in body
        assert [r.outcome for r in records] == [Outcome.UNRESOLVED, Outcome.UPSTREAM_FAILED]

    asyncio.run(scenario())


def test_the_proxy_unix_socket_is_owner_only_and_removed_on_close(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "proxy.sock"
        async with echo_server() as port:
            proxy = make_proxy(policy("allowlist", f"127.0.0.1:{port}"))
            await proxy.start(unix_path=path)
            try:
                assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
                reader, writer = await asyncio.open_unix_connection(str(path))
                writer.write(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
                assert await echo_through(reader, writer, b"via unix") == b"via unix"
                writer.close()
            finally:
                await proxy.close()
        assert not path.exists()

    asyncio.run(scenario())


def test_a_stale_socket_file_is_replaced_but_a_regular_file_is_not(tmp_path: Path) -> None:
    import socket as socketlib

    from agentbox.errors import EgressError

    async def scenario() -> None:
        stale = tmp_path / "stale.sock"
        leftover = socketlib.socket(socketlib.AF_UNIX)
        leftover.bind(str(stale))
        leftover.close()  # bound, never listening: what a crashed process leaves
        proxy = make_proxy(policy("off"))
        await proxy.start(unix_path=stale)
        second = make_proxy(policy("off"))
        with pytest.raises(EgressError, match="in use by another running process"):
            await second.start(unix_path=stale)
        await proxy.close()
        regular = tmp_path / "notes.txt"
        regular.write_text("keep me")
        with pytest.raises(EgressError, match="exists and is not a socket"):
            await make_proxy(policy("off")).start(unix_path=regular)
        assert regular.read_text() == "keep me"

    asyncio.run(scenario())


def test_http_absolute_form_default_port_and_response_relay() -> None:
    async def scenario() -> None:
        async with http_origin() as origin:
            resolver = StubResolver({"web.example": ["151.101.0.3"]})
            connector = LoopbackConnector({("151.101.0.3", 80): origin.port})
            proxy = make_proxy(policy("allowlist", "web.example"), resolver=resolver, connector=connector)
            async with running_proxy(proxy):
                status, _, answer = await http_request(
                    proxy.tcp_port, b"GET http://web.example/index.html HTTP/1.1\r\nHost: web.example\r\n\r\n")
        assert status == 200
        seen = json.loads(answer)
        assert seen["request_line"] == "GET /index.html HTTP/1.1"
        assert ["Host", "web.example"] in seen["headers"]

    asyncio.run(scenario())


def test_an_origin_that_sends_no_valid_response_gives_502() -> None:
    async def scenario() -> None:
        async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            writer.close()

        server = await asyncio.start_server(garbage, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        proxy = make_proxy(policy("allowlist", f"127.0.0.1:{port}"))
        async with running_proxy(proxy):
            status, _, text = await http_request(proxy.tcp_port,
                                                 f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\n\r\n".encode())
        server.close()
        assert status == 502 and b"no valid response" in text

    asyncio.run(scenario())


def test_read_response_helper_sees_what_a_client_sees() -> None:
    """The helper used above parses a real proxy answer (guards the other tests' reading)."""

    async def scenario() -> None:
        proxy = make_proxy(policy("off"))
        async with running_proxy(proxy):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.tcp_port)
            writer.write(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
            status, headers, body = await read_response(reader)
            writer.close()
        assert status == 403 and headers["content-type"].startswith("text/plain")
        assert body == b"agentbox egress: denied by rule mode:off: network mode is off: no egress at all\n"

    asyncio.run(scenario())


@pytest.mark.parametrize(("greeting", "reply", "version"), [
    (b"\x05\x01\x00", b"\x05\xff", "SOCKS5"),  # one method offered: no authentication
    (b"\x04\x01\x01\xbb\x7f\x00\x00\x01agent\x00", b"\x00\x5b" + bytes(6), "SOCKS4"),
])
def test_a_socks_client_is_refused_at_once_in_its_own_protocol(greeting: bytes, reply: bytes, version: str) -> None:
    async def scenario() -> None:
        log, records = collecting_log()
        connector = LoopbackConnector()
        proxy = make_proxy(policy("open"), decisions=log, connector=connector)  # header timeout: 5 s
        async with running_proxy(proxy):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.tcp_port)
            writer.write(greeting)
            await writer.drain()
            # Well inside the header timeout: a proxy that waited for an HTTP head would miss it.
            answered = await asyncio.wait_for(reader.read(), timeout=1.0)
            writer.close()
            await asyncio.sleep(0)
        assert answered == reply  # and then the proxy closed the connection
        assert connector.attempts == []
        [record] = records
        assert (record.method, record.decision.allowed, record.decision.rule, record.outcome) == (
            version, False, "socks", Outcome.DENIED)
        assert record.decision.reason == f"{version} is not supported: use the HTTP proxy at http://127.0.0.1:3128"

    asyncio.run(scenario())


def test_a_request_whose_first_byte_comes_alone_is_still_read() -> None:
    async def scenario() -> None:
        async with echo_server() as port:
            proxy = make_proxy(policy("allowlist", f"127.0.0.1:{port}"))
            async with running_proxy(proxy):
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.tcp_port)
                writer.write(b"C")
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.write(f"ONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
                assert await echo_through(reader, writer, b"split") == b"split"
                writer.close()

    asyncio.run(scenario())
