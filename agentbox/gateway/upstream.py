"""The gateway's way to a provider: TLS with the certificate verified (the system's CA store,
plus an extra bundle where settings name one), names resolved through the pinned hosts
first (settings' `egress_hosts`, as the egress proxy does), one HTTP client for the
gateway's life."""

from __future__ import annotations

import ipaddress
import socket
import ssl
from pathlib import Path

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from agentbox.errors import InvalidInput


class PinnedResolver(AbstractResolver):
    def __init__(self, *, pins: dict[str, str]) -> None:
        self._pins = pins
        self._default = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        address = self._pins.get(host.lower().rstrip("."))
        if address is None:
            return await self._default.resolve(host, port, family)
        ip = ipaddress.ip_address(address)
        return [ResolveResult(hostname=host, host=str(ip), port=port,
                              family=socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                              proto=0, flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        await self._default.close()


def tls_context(*, extra_ca: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context()  # verifies the certificate and the host name
    if extra_ca is not None:
        try:
            context.load_verify_locations(cafile=str(extra_ca))
        except (OSError, ssl.SSLError) as exc:
            raise InvalidInput(f"cannot load the gateway's extra CA bundle {extra_ca}: {exc}",
                               hint="gateway_ca_bundle in settings must name a PEM file") from None
    return context


def client_session(*, pins: dict[str, str], extra_ca: Path | None) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(ssl=tls_context(extra_ca=extra_ca), resolver=PinnedResolver(pins=pins),
                                     limit=64, enable_cleanup_closed=True)
    # No decompression: the guest gets the provider's bytes as they were sent.
    return aiohttp.ClientSession(connector=connector, auto_decompress=False, trust_env=False,
                                 timeout=aiohttp.ClientTimeout(total=None, connect=20, sock_read=600))
