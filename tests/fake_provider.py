"""A local fake of the API providers: HTTPS on 127.0.0.1 with a certificate from a CA made
for the test (trustme), for api.anthropic.com and api.openai.com. It answers only requests
that carry the real key it was given, and records every request's headers, so a test can
check that the gateway swapped the phantom token for the key.

Used by tests/gateway (unit), tests/vm/test_gateway.py and bench/agents.py.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trustme
from aiohttp import web

HOSTS = ("api.anthropic.com", "api.openai.com")
ANSWER = "hello from the fake provider"


@dataclass(frozen=True)
class Seen:
    host: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")


class FakeProvider:
    def __init__(self, *, key: str, ca_path: Path) -> None:
        self.key = key
        self.ca_path = ca_path
        self.seen: list[Seen] = []
        self.release = threading.Event()  # a streaming answer waits for it before its second half
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fake-provider")
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(ca_path))
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*HOSTS, "other.agentbox.test").configure_cert(self._context)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)

    def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    def client_context(self) -> ssl.SSLContext:
        """What a direct client needs to trust this fake (bench: the gateway-less baseline)."""
        return ssl.create_default_context(cafile=str(self.ca_path))

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._context)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(host=request.host, method=request.method, path=request.path_qs,
                              headers=tuple(request.headers.items()), body=body))
        given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        if given != self.key:
            return web.json_response({"type": "error", "error": {"type": "authentication_error",
                                                                  "message": "fake provider: wrong key"}}, status=401)
        try:
            doc = json.loads(body) if body else {}
        except ValueError:
            doc = {}
        if request.path.endswith("/chat/completions"):
            return web.json_response({"id": "chatcmpl-fake", "object": "chat.completion", "model": doc.get("model"),
                                      "choices": [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant", "content": ANSWER}}],
                                      "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})
        if doc.get("stream"):
            return await self._stream(request, doc)
        return web.json_response({"id": "msg_fake", "type": "message", "role": "assistant", "model": doc.get("model"),
                                  "content": [{"type": "text", "text": ANSWER}], "stop_reason": "end_turn",
                                  "usage": {"input_tokens": 10, "output_tokens": 5}})

    async def _stream(self, request: web.Request, doc: dict[str, object]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)

        async def event(name: str, data: dict[str, object]) -> None:
            await response.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

        await event("message_start", {"type": "message_start", "message": {
            "id": "msg_fake", "model": doc.get("model"), "usage": {"input_tokens": 10, "output_tokens": 1}}})
        await event("content_block_delta", {"type": "content_block_delta", "delta": {"text": "first half"}})
        # The second half waits until the test has read the first through the gateway (or 60 s).
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 60)
        await event("content_block_delta", {"type": "content_block_delta", "delta": {"text": "second half"}})
        await event("message_delta", {"type": "message_delta", "usage": {"output_tokens": 5}})
        await event("message_stop", {"type": "message_stop"})
        await response.write_eof()
        return response


@contextmanager
def fake_provider(*, key: str, ca_path: Path) -> Iterator[FakeProvider]:
    fake = FakeProvider(key=key, ca_path=ca_path)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
