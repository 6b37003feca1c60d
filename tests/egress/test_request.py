"""What the proxy accepts as a request, and what it refuses before judging anything."""

from __future__ import annotations

import asyncio

import pytest

from agentbox.egress.request import ProxyRequest, RequestError, origin_head, read_request


def parse(raw: bytes) -> ProxyRequest:
    async def go() -> ProxyRequest:
        reader = asyncio.StreamReader(limit=4096)
        reader.feed_data(raw)
        reader.feed_eof()
        return await read_request(reader, max_bytes=4096, timeout=5)

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("raw", "method", "host", "port", "path"),
    [
        (b"CONNECT example.com:443 HTTP/1.1\r\n\r\n", "CONNECT", "example.com", 443, ""),
        (b"CONNECT Example.COM.:443 HTTP/1.1\r\n\r\n", "CONNECT", "example.com", 443, ""),
        (b"CONNECT [2001:db8::1]:8443 HTTP/1.1\r\n\r\n", "CONNECT", "2001:db8::1", 8443, ""),
        (b"\r\nGET http://example.com HTTP/1.0\r\n\r\n", "GET", "example.com", 80, "/"),
        (b"GET http://example.com:8080/a/b?c=d&e HTTP/1.1\r\n\r\n", "GET", "example.com", 8080, "/a/b?c=d&e"),
        (b"PUT HTTP://[::1]:81/x HTTP/1.1\nHost: ignored\n\n", "PUT", "::1", 81, "/x"),
    ],
)
def test_accepted_requests(raw: bytes, method: str, host: str, port: int, path: str) -> None:
    request = parse(raw)
    assert (request.method, request.host, request.port, request.path) == (method, host, port, path)


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (b"", 0, "client closed"),
        (b"CONNECT example.com:443 HTTP/1.1\r\n", 400, "incomplete request head"),
        (b"CONNECT example.com:443\r\n\r\n", 400, "malformed request line"),
        (b"CONNECT example.com:443 HTTP/2\r\n\r\n", 400, "malformed request line"),
        (b"CONNECT example.com:0 HTTP/1.1\r\n\r\n", 400, "invalid port '0'"),
        (b"CONNECT 2001:db8::1:443 HTTP/1.1\r\n\r\n", 400, "IPv6 addresses go in brackets"),
        (b"CONNECT 127.1:80 HTTP/1.1\r\n\r\n", 400, "invalid host '127.1'"),  # no shorthand IPv4
        (b"GET https://example.com/ HTTP/1.1\r\n\r\n", 400, "use CONNECT for https"),
        (b"GET http://user:pw@example.com/ HTTP/1.1\r\n\r\n", 400, "credentials in the URI"),
        (b"GET http://ex\xc3\xa4mple.com/ HTTP/1.1\r\n\r\n", 400, "not ASCII"),
        (b"GET http://example.com/ HTTP/1.1\r\n folded: header\r\n\r\n", 400, "malformed header line"),
        (b"GET http://example.com/ HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n", 431, "too large"),
    ],
)
def test_refused_requests(raw: bytes, status: int, message: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse(raw)
    assert caught.value.status == status and message in caught.value.message


def test_the_origin_gets_its_own_host_header_and_one_request_only() -> None:
    request = parse(b"GET http://[2001:db8::1]:8080/p HTTP/1.0\r\nHost: x\r\nKeep-Alive: 5\r\nTE: trailers\r\n"
                    b"Upgrade: websocket\r\nAccept: */*\r\n\r\n")
    assert origin_head(request) == (b"GET /p HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\nAccept: */*\r\n"
                                    b"Connection: close\r\n\r\n")
