"""The credential gateway: an HTTP server on an owner-only Unix socket that the guest
reaches at its own 127.0.0.1:3129 (the SSH forward), one per running workspace.

A request `METHOD /<provider>/<path>` carrying the workspace's current phantom token in the
provider's auth header is sent on to `https://<provider host>/<path>` with the real key in
its place; anything else is refused with a JSON error both Anthropic's and OpenAI's
clients show. The response streams back as it arrives. Every request, refused or not, is
one `gateway.request` record in the audit log (no key, no token, no body).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from agentbox.egress.sockets import BoundSocket, bind_unix_socket
from agentbox.gateway.headers import downstream_headers, presented_token, upstream_headers
from agentbox.gateway.state import AuditSink, ModeReader, UsageBook
from agentbox.gateway.upstream import client_session
from agentbox.gateway.usage import UsageScanner, request_model
from agentbox.model.api_use import ApiUse
from agentbox.model.network import NetworkMode
from agentbox.model.providers import Provider, find_provider, provider_names
from agentbox.stores.api_keys import ApiKeyStore
from agentbox.stores.gateway_tokens import GatewayToken, GatewayTokenFile

log = logging.getLogger(__name__)

AUDIT_EVENT = "gateway.request"
MAX_BODY_BYTES = 32 * 1024 * 1024
WATCH_S = 0.2  # how soon `net off` or a new token cuts the streams in progress
KeyReader = Callable[[str], str | None]


@dataclass(frozen=True)
class GatewayOptions:
    workspace: str
    socket_path: Path | None
    token_file: Path
    usage_file: Path
    policy_file: Path
    config_dir: Path  # where the host's API keys are (stores/api_keys.py)
    audit_log: Path | None = None
    pins: tuple[tuple[str, str], ...] = ()  # (host, address): settings' egress_hosts
    extra_ca: Path | None = None  # trusted besides the system's CAs (tests' own CA)
    upstream_port: int = 443  # tests point it at their fake provider's port
    tcp_port: int | None = None  # also listen on 127.0.0.1 (tests and benchmarks)
    keys: KeyReader | None = field(default=None, compare=False)  # default: ApiKeyStore(config_dir)


class Refusal(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


class CredentialGateway:
    def __init__(self, *, options: GatewayOptions) -> None:
        self._o = options
        self._tokens = GatewayTokenFile(path=options.token_file)
        self._modes = ModeReader(path=options.policy_file)
        self._usage = UsageBook(path=options.usage_file)
        self._audit = AuditSink(path=options.audit_log)
        store = ApiKeyStore(config_dir=options.config_dir)
        self._keys: KeyReader = options.keys or (lambda name: store.get(provider=name))
        self._active: dict[asyncio.Task[Any], str] = {}  # request task -> its token id
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._bound: BoundSocket | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.tcp_port: int | None = None

    async def start(self) -> None:
        self._session = client_session(pins=dict(self._o.pins), extra_ca=self._o.extra_ca)
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        if self._o.socket_path is not None:
            self._bound = bind_unix_socket(path=self._o.socket_path)
            await web.SockSite(self._runner, self._bound.sock).start()
        if self._o.tcp_port is not None:
            site = web.TCPSite(self._runner, "127.0.0.1", self._o.tcp_port)
            await site.start()
            server = site._server  # the port the OS picked for tcp_port=0
            assert isinstance(server, asyncio.Server)
            self.tcp_port = server.sockets[0].getsockname()[1]
        self._watcher = asyncio.create_task(self._watch())

    @property
    def open_requests(self) -> int:
        return len(self._active)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        if self._bound is not None:
            self._bound.remove()
        self._audit.close()

    # -- cutting what may no longer run -------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_S)
            if not self._active:
                continue
            off = self._modes.mode() is NetworkMode.OFF
            token = self._tokens.current()
            for task, token_id in list(self._active.items()):
                if off or (token_id and (token is None or token.id != token_id)):
                    task.cancel("cut")

    # -- one request --------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        started = time.monotonic()
        entry: dict[str, Any] = {"method": request.method, "path": request.rel_url.path, "status": 0,
                                 "forwarded": False,
                                 "bytes_up": 0, "bytes_down": 0, "model": "", "tokens": 0}
        token: GatewayToken | None = None
        self._active[task] = ""  # until admitted: cut by `off` too
        try:
            provider, upstream_path = self._route(request)
            entry["provider"] = provider.name
            entry["path"] = upstream_path
            token = self._admit(request, provider)
            self._active[task] = token.id
            entry.update(token=token.id, session=token.session)
            key = await asyncio.get_running_loop().run_in_executor(None, self._keys, provider.name)
            if not key:
                raise Refusal(401, "authentication_error",
                              f"no {provider.name} API key is stored on the host: run `agentbox key set "
                              f"{provider.name}` there (the key never enters this VM)")
            exhausted = self._usage.use(token.id).exhausted(token.budget)
            if exhausted:
                raise Refusal(429, "budget_exceeded",
                              f"this session's API budget is used up: {exhausted}. A new session gets a new "
                              "budget (agentbox session end, or agentbox reset); the template's `budget:` sets it")
            body = await request.read()
            entry["bytes_up"] = len(body)
            entry["model"] = request_model(body, content_type=request.content_type)
            self._usage.add(token.id, ApiUse(requests=1, bytes_up=len(body)), save=False)
            entry["forwarded"] = True
            return await self._forward(request, provider, upstream_path, key, body, entry, token)
        except Refusal as refusal:
            entry.update(status=refusal.status, refused=refusal.message)
            return _error(refusal)
        except web.HTTPException as exc:  # e.g. a body over MAX_BODY_BYTES: 413 from aiohttp
            entry.update(status=exc.status, refused=exc.reason)
            raise
        except asyncio.CancelledError:
            entry.update(status=entry["status"] or 499, refused="cut: network off or the session's token ended")
            if request.transport is not None:
                request.transport.abort()
            raise
        finally:
            entry["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
            self._audit.append(event=AUDIT_EVENT, details=entry)
            self._active.pop(task, None)

    def _route(self, request: web.Request) -> tuple[Provider, str]:
        if request.method == "CONNECT" or not request.raw_path.startswith("/"):
            raise Refusal(400, "invalid_request_error",
                          "the credential gateway forwards only to its providers: "
                          "use http://127.0.0.1:3129/<provider>/<path>")
        name, _, rest = request.rel_url.raw_path.lstrip("/").partition("/")
        provider = find_provider(name)
        if provider is None:
            raise Refusal(404, "not_found_error",
                          f"the credential gateway has no provider {name!r} (known: {', '.join(provider_names())});"
                          " any other host is refused")
        return provider, "/" + rest

    def _admit(self, request: web.Request, provider: Provider) -> GatewayToken:
        if self._modes.mode() is NetworkMode.OFF:
            raise Refusal(403, "permission_error",
                          "the workspace's network is off: the credential gateway is cut too (agentbox net ...)")
        token = self._tokens.current()
        presented = presented_token(provider=provider, headers=request.headers.items())
        if not presented:
            raise Refusal(401, "authentication_error",
                          f"no session token in the {provider.auth_header} header: use the {provider.key_env} that "
                          "agentbox set in this VM (a login shell has it)")
        if token is None:
            raise Refusal(401, "authentication_error",
                          "this workspace has no live session token (its session ended): start a new shell")
        if not token.matches(presented):
            raise Refusal(403, "permission_error",
                          "that is not this workspace's current session token (an ended session's, or another"
                          " workspace's): start a new login shell")
        return token

    async def _forward(self, request: web.Request, provider: Provider, path: str, key: str, body: bytes,
                       entry: dict[str, Any], token: GatewayToken) -> web.StreamResponse:
        assert self._session is not None
        url = URL.build(scheme="https", host=provider.host,
                        port=None if self._o.upstream_port == 443 else self._o.upstream_port,
                        path=path, query_string=request.rel_url.raw_query_string, encoded=True)
        headers = upstream_headers(provider=provider, headers=request.headers.items(), key=key)
        try:
            upstream = await self._session.request(request.method, url, headers=headers, data=body or None,
                                                   allow_redirects=False)
        except aiohttp.ClientConnectorCertificateError as exc:
            raise Refusal(502, "api_error", f"the certificate of {provider.host} could not be verified: "
                                            f"{exc.certificate_error}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise Refusal(502, "api_error", f"cannot reach {provider.host}: {exc}") from None
        async with upstream:
            entry["status"] = upstream.status
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in downstream_headers(upstream.headers.items()):
                response.headers.add(name, value)
            scanner = UsageScanner(content_type=upstream.headers.get("content-type", ""))
            down = 0
            # The bytes budget holds mid-answer too: a long stream is cut where it runs out.
            before = self._usage.use(token.id)
            room = token.budget.bytes - (before.bytes_up + before.bytes_down) if token.budget.bytes else None
            try:
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    down += len(chunk)
                    scanner.feed(chunk)
                    await response.write(chunk)
                    if room is not None and down >= room:
                        entry["refused"] = (f"cut: this session's API budget is used up: bytes "
                                            f"({before.bytes_up + before.bytes_down + down} of {token.budget.bytes})")
                        if request.transport is not None:
                            request.transport.abort()
                        return response
                await response.write_eof()
            except (aiohttp.ClientError, ConnectionError) as exc:
                entry["refused"] = f"stream broken: {exc}"
            finally:
                entry.update(bytes_down=down, tokens=scanner.tokens())
                self._usage.add(token.id, ApiUse(bytes_down=down, tokens=entry["tokens"]))
            return response


def _error(refusal: Refusal) -> web.Response:
    # Anthropic's error shape; OpenAI's clients read error.message and error.code from it too.
    return web.json_response({"type": "error", "error": {"type": refusal.kind, "code": refusal.kind,
                                                          "message": "agentbox: " + refusal.message}},
                             status=refusal.status)


async def serve(*, options: GatewayOptions, stop: asyncio.Event,
                on_ready: Callable[[CredentialGateway], Awaitable[None] | None] | None = None) -> None:
    gateway = CredentialGateway(options=options)
    try:
        await gateway.start()
        if on_ready is not None:
            result = on_ready(gateway)
            if result is not None:
                await result
        log.info("credential gateway of %s serving %s", options.workspace, options.socket_path)
        await stop.wait()
    finally:
        await gateway.close()
