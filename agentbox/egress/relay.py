"""Copying bytes between a client and its destination, counting them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

CHUNK = 256 * 1024
# A writer's buffer may hold this much before drain() waits: with asyncio's 64 KiB default,
# a bulk download stalled on every chunk (the proxy is one Python thread between two sockets).
WRITE_BUFFER_HIGH = 1024 * 1024
Count = Callable[[int], None]


async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, count: Count,
               on_break: Callable[[], None]) -> None:
    """Copy until `src` ends, then pass the end on as a half-close. If either side breaks,
    `on_break` ends the whole connection, so the other direction does not linger."""
    try:
        dst.transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        while data := await src.read(CHUNK):
            dst.write(data)
            count(len(data))
            await dst.drain()
        if dst.can_write_eof() and not dst.transport.is_closing():
            dst.write_eof()
    except (ConnectionError, OSError, RuntimeError):
        on_break()


async def relay(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    *, up: Count, down: Count, until_origin_done: bool,
    response_head: Callable[[], Awaitable[bool]] | None = None,
) -> None:
    """Copy both ways until both directions ended (a tunnel), or only until the origin's
    direction ended (`until_origin_done`: one plain HTTP exchange). `response_head` runs
    first on the origin's direction (the client's request body already flows meanwhile,
    as an origin may wait for it); if it returns False, nothing more is copied."""

    def abort() -> None:
        client[1].transport.abort()
        upstream[1].transport.abort()

    upward = asyncio.create_task(pump(client[0], upstream[1], count=up, on_break=abort))
    try:
        if response_head is not None and not await response_head():
            return
        await pump(upstream[0], client[1], count=down, on_break=abort)
        if not until_origin_done:
            await upward
    finally:
        upward.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await upward


async def answer(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Send the proxy's own final answer; a client that already left is no error."""
    with contextlib.suppress(ConnectionError, OSError, RuntimeError):
        writer.write(data)
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
