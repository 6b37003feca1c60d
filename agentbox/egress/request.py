"""The HTTP/1.x side of the proxy: reading a client's request head within limits, and the
heads the proxy writes (origin-form requests, rewritten responses, its own answers)."""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit

from agentbox.model.network import is_valid_host_name, normalise_host

# Hop-by-hop headers (RFC 9110 7.6.1) and the proxy's own: never passed on. Transfer-Encoding
# is hop-by-hop too, but the body is relayed byte for byte, so its framing must stay.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate",
     "te", "trailer", "upgrade"}
)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
GUEST_PROXY_URL = "http://127.0.0.1:3128"  # as cloud-init sets it in the guest (remote.forward)
# A SOCKS client's first byte is its version; no HTTP request starts with either.
_SOCKS_REFUSALS = {4: b"\x00\x5b" + bytes(6),  # SOCKS4 "request rejected or failed"
                   5: b"\x05\xff"}  # SOCKS5 "no acceptable authentication methods"
_VERSION = re.compile(r"^HTTP/1\.[01]$")


class RequestError(Exception):
    """The client's request cannot be served; `status` is the answer (0: just close)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SocksRefused(RequestError):
    """The client spoke SOCKS: `reply` is the refusal in its own protocol, sent at once (it
    would otherwise wait for an HTTP answer to a greeting the proxy cannot parse)."""

    def __init__(self, version: int) -> None:
        super().__init__(0, f"SOCKS{version} is not supported: use the HTTP proxy at {GUEST_PROXY_URL}")
        self.version = version
        self.reply = _SOCKS_REFUSALS[version]


@dataclass(frozen=True)
class ProxyRequest:
    method: str  # CONNECT, GET, POST, ...
    host: str  # as asked: a name or an IP literal, without brackets
    port: int
    path: str  # origin-form target for plain HTTP ("" for CONNECT)
    version: str
    headers: tuple[tuple[str, str], ...]

    @property
    def is_connect(self) -> bool:
        return self.method == "CONNECT"


async def read_head(reader: asyncio.StreamReader, *, max_bytes: int, first: bytes = b"") -> list[bytes]:
    """The lines of one message head, up to the blank line, within `max_bytes` in all;
    `first`: bytes of it already read."""
    lines: list[bytes] = []
    total = 0
    while True:
        try:
            line = first if first.endswith(b"\n") else first + await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:  # one line longer than the reader's limit
            raise RequestError(431, "request header fields too large") from None
        except asyncio.IncompleteReadError as exc:
            if not lines and not exc.partial and not first:
                raise RequestError(0, "client closed before sending a request") from None
            raise RequestError(400, "incomplete request head") from None
        first = b""
        total += len(line)
        if total > max_bytes:
            raise RequestError(431, "request header fields too large")
        if line in (b"\r\n", b"\n"):
            if lines:
                return lines
            continue  # tolerate blank lines before the request line (RFC 9112 2.2)
        lines.append(line.rstrip(b"\r\n"))


async def read_request(reader: asyncio.StreamReader, *, max_bytes: int, timeout: float) -> ProxyRequest:
    """Read and check a proxy request; raise RequestError with the status to answer."""
    try:
        async with asyncio.timeout(timeout):
            try:
                first = await reader.readexactly(1)
            except asyncio.IncompleteReadError:
                raise RequestError(0, "client closed before sending a request") from None
            if first[0] in _SOCKS_REFUSALS:
                raise SocksRefused(first[0])
            lines = await read_head(reader, max_bytes=max_bytes, first=first)
    except TimeoutError:
        raise RequestError(408, "request head not received in time") from None
    try:
        text = [line.decode("ascii") for line in lines]
    except UnicodeDecodeError:
        raise RequestError(400, "request head is not ASCII") from None
    parts = text[0].split(" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not _VERSION.match(parts[2]):
        raise RequestError(400, "malformed request line")
    method, target, version = parts
    headers = tuple(_header(line) for line in text[1:])
    if method == "CONNECT":
        host, port = _authority(target, default_port=None)
        return ProxyRequest(method, host, port, "", version, headers)
    if target.startswith("/") or target == "*":
        raise RequestError(400, "this is a proxy: the request target must be an absolute http:// URI")
    parsed = urlsplit(target)
    if parsed.scheme.lower() != "http":
        raise RequestError(400, "only http:// URIs are proxied; use CONNECT for https")
    if parsed.username is not None or parsed.password is not None:
        raise RequestError(400, "credentials in the URI are not accepted")
    host, port = _authority(parsed.netloc, default_port=80)
    path = parsed.path or "/"
    if parsed.query:
        path = f"{path}?{parsed.query}"
    return ProxyRequest(method, host, port, path, version, headers)


def origin_head(request: ProxyRequest) -> bytes:
    """The request as sent to the origin: origin-form target, own Host, one request only."""
    named = _connection_tokens(request.headers)
    lines = [f"{request.method} {request.path} HTTP/1.1"]
    lines.append(f"Host: {_authority_text(request.host, request.port, default=80)}")
    for name, value in request.headers:
        lowered = name.lower()
        if lowered not in HOP_BY_HOP and lowered not in named and lowered != "host":
            lines.append(f"{name}: {value}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def response_head(lines: list[bytes]) -> tuple[int, bytes]:
    """The origin's response head with hop-by-hop headers removed and `Connection: close`
    added (the proxy serves one request per connection), and its status code."""
    status_line = lines[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not _VERSION.match(parts[0]) or not parts[1].isdigit():
        raise RequestError(502, "the origin sent a malformed response")
    headers = [_header(line.decode("latin-1"), status=502) for line in lines[1:]]
    named = _connection_tokens(tuple(headers))
    kept = [f"{n}: {v}" for n, v in headers if n.lower() not in HOP_BY_HOP and n.lower() not in named]
    text = "\r\n".join([status_line, *kept, "Connection: close"]) + "\r\n\r\n"
    return int(parts[1]), text.encode("latin-1")


def error_response(status: int, text: str) -> bytes:
    """The proxy's own short plain-text answer (refusals, errors), closing the connection."""
    body = f"agentbox egress: {text}\n".encode()
    phrase = HTTPStatus(status).phrase
    head = (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def _header(line: str, *, status: int = 400) -> tuple[str, str]:
    name, sep, value = line.partition(":")
    if not sep or not _TOKEN.match(name):  # also refuses obsolete line folding
        raise RequestError(status, "malformed header line")
    if "\r" in value or "\x00" in value:  # a bare CR could split the head at the origin
        raise RequestError(status, "control characters in a header value")
    return name, value.strip()


def _connection_tokens(headers: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> frozenset[str]:
    """Headers the sender named in Connection: hop-by-hop as well."""
    return frozenset(
        token.strip().lower()
        for name, value in headers if name.lower() in ("connection", "proxy-connection")
        for token in value.split(",")
    )


def _authority(text: str, *, default_port: int | None) -> tuple[str, int]:
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise RequestError(400, f"malformed authority {text!r}")
        port_text = rest[1:] if rest else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" not in text:
        host, port_text = text, ""
    else:
        raise RequestError(400, f"malformed authority {text!r} (IPv6 addresses go in brackets)")
    if not port_text:
        if default_port is None:
            raise RequestError(400, "CONNECT needs host:port")
        port = default_port
    elif port_text.isdigit() and 1 <= int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise RequestError(400, f"invalid port {port_text!r}")
    return _checked_host(host), port


def _checked_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = normalise_host(host=host)
    if not is_valid_host_name(host=name):
        raise RequestError(400, f"invalid host {host!r}")
    return name


def _authority_text(host: str, port: int, *, default: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port == default else f"{shown}:{port}"
