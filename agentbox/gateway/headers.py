"""Header handling between the guest and a provider: which headers cross the gateway, and
the swap of the phantom token for the real key. Pure functions, unit-tested on their own."""

from __future__ import annotations

from collections.abc import Iterable

from agentbox.model.providers import Provider

# RFC 9110 section 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
                        "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"})
# Set by the gateway itself, whatever the guest sent: the upstream host, the body's length
# (the HTTP library writes it), the credentials, and plain encoding so `usage` stays readable.
_REPLACED = frozenset({"host", "content-length", "authorization", "x-api-key", "accept-encoding",
                       "forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip"})


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    """Headers that a Connection header names are hop-by-hop too."""
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            named |= {part.strip().lower() for part in value.split(",") if part.strip()}
    return named


def presented_token(*, provider: Provider, headers: Iterable[tuple[str, str]]) -> str:
    """What the guest put in the provider's auth header ("" when nothing usable)."""
    for name, value in headers:
        if name.lower() == provider.auth_header:
            return provider.key_from_header(value)
    return ""


def upstream_headers(*, provider: Provider, headers: Iterable[tuple[str, str]], key: str) -> list[tuple[str, str]]:
    """The guest's headers as the provider gets them: hop-by-hop ones and every credential
    dropped, then the real key in the provider's header. Host is the provider's (set by the
    HTTP client from the URL)."""
    headers = list(headers)
    drop = HOP_BY_HOP | _REPLACED | _connection_tokens(headers)
    kept = [(name, value) for name, value in headers if name.lower() not in drop]
    return [*kept, (provider.auth_header, provider.auth_value(key)), ("accept-encoding", "identity")]


def downstream_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The provider's response headers as the guest gets them: without hop-by-hop ones (the
    gateway's own connection to the guest frames the body itself)."""
    headers = list(headers)
    drop = HOP_BY_HOP | _connection_tokens(headers) | {"content-length"}
    return [(name, value) for name, value in headers if name.lower() not in drop]
