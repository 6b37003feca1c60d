"""Local test servers, a stub resolver and a loopback-only connector: the egress tests send
traffic only to 127.0.0.1 and Unix sockets, and never look up a real name."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from agentbox.egress.proxy import EgressProxy, ProxyLimits
from agentbox.model.network import IPAddress, NetworkPolicy, parse_policy

LOCAL = ipaddress.ip_address("127.0.0.1")


def policy(mode: str = "allowlist", *entries: str) -> NetworkPolicy:
    return parse_policy(mode=mode, allowlist=entries)


class StubResolver:
    """Names to addresses from a table; records every lookup; unknown names fail."""

    def __init__(self, table: dict[str, Sequence[str]] | None = None) -> None:
        self.table = dict(table or {})
        self.lookups: list[str] = []

    async def __call__(self, *, host: str, port: int) -> tuple[IPAddress, ...]:
        self.lookups.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return tuple(ipaddress.ip_address(a) for a in self.table[host])


class LoopbackConnector:
    """Connects 127.0.0.1 for real and stands in for other addresses by sending them to a
    local server (`routes`: (address, port) -> local port). Anything else is unreachable, so
    a test can never reach beyond this machine."""

    def __init__(self, routes: dict[tuple[str, int], int] | None = None) -> None:
        self.routes = dict(routes or {})
        self.attempts: list[tuple[str, int]] = []

    async def __call__(self, *, address: IPAddress, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.attempts.append((str(address), port))
        if (str(address), port) in self.routes:
            return await asyncio.open_connection("127.0.0.1", self.routes[(str(address), port)])
        if address == LOCAL:
            return await asyncio.open_connection("127.0.0.1", port)
        raise ConnectionRefusedError(f"test connector: {address} is not a test destination")


@asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    """A TCP echo server on 127.0.0.1; yields its port. Echoes until the client half-closes."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@dataclass
class Origin:
    """A tiny HTTP origin that answers with a JSON account of the request it received."""

    port: int = 0
    seen: list[dict[str, object]] = field(default_factory=list)


@asynccontextmanager
async def http_origin() -> AsyncIterator[Origin]:
    origin = Origin()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = [line.split(": ", 1) for line in head[1:] if line]
            length = next((int(v) for n, v in headers if n.lower() == "content-length"), 0)
            body = await reader.readexactly(length) if length else b""
            seen = {"request_line": head[0], "headers": headers, "body": body.decode()}
            origin.seen.append(seen)
            payload = json.dumps(seen).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nKeep-Alive: timeout=5\r\n"
                         b"Connection: keep-alive, X-Secret\r\nX-Secret: hop\r\n"
                         + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
            await writer.drain()
            await reader.read()  # like a keep-alive server: wait for the client (proxy) to close
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    origin.port = server.sockets[0].getsockname()[1]
    try:
        yield origin
    finally:
        server.close()


@asynccontextmanager
async def running_proxy(proxy: EgressProxy) -> AsyncIterator[EgressProxy]:
    await proxy.start(tcp_port=0)
    try:
        yield proxy
    finally:
        await proxy.close()


def make_proxy(policy_: NetworkPolicy, **kwargs: object) -> EgressProxy:
    kwargs.setdefault("resolver", StubResolver())
    kwargs.setdefault("connector", LoopbackConnector())
    kwargs.setdefault("limits", ProxyLimits(header_timeout=5.0, connect_timeout=5.0))
    return EgressProxy(policy=policy_, **kwargs)  # type: ignore[arg-type]


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-cased names) and, when the proxy closes, the body."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ")[1])
    headers = {n.lower(): v for n, v in (line.split(": ", 1) for line in head[1:] if line)}
    length = headers.get("content-length")
    body = await reader.readexactly(int(length)) if length is not None else await reader.read()
    return status, headers, body


async def open_tunnel(
    port: int, target: str
) -> tuple[int, bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    """CONNECT through the proxy at 127.0.0.1:`port`; returns status, refusal body, streams."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status = int(head.split(" ")[1])
    body = b""
    if status != 200:
        body = await reader.read()
        writer.close()
    return status, body, reader, writer


async def echo_through(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> bytes:
    writer.write(data)
    await writer.drain()
    return await reader.readexactly(len(data))


async def http_request(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await read_response(reader)
    finally:
        writer.close()


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """True once the proxy has closed the connection (EOF or reset)."""
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass
    return True


async def until(condition: Callable[[], bool], *, guard: float = 10.0) -> None:
    """Wait for something the event loop will make true; the guard only stops a hang."""
    async with asyncio.timeout(guard):
        while not condition():
            await asyncio.sleep(0.01)
