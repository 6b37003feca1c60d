"""The API providers the credential gateway knows: where each one's API lives, which header
carries its key, and which environment variables point its clients at the gateway.

The guest reaches a provider at `http://127.0.0.1:3129/<name>/...`; the gateway forwards
that to `https://<host>/...` only (agentbox/gateway). One frozen record per provider, so a
new one is a table entry, not new code.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentbox.errors import InvalidInput

GUEST_GATEWAY_PORT = 3129  # the guest's port for the gateway (3128 is the egress proxy's)


@dataclass(frozen=True)
class Provider:
    name: str
    host: str  # the only upstream host the gateway sends this provider's requests to
    auth_header: str  # lowercase header name that carries the key
    auth_scheme: str  # what precedes the key in that header ("Bearer " or "")
    key_env: str  # the guest variable that holds the (phantom) key
    base_url_env: tuple[str, ...]  # guest variables that hold the base URL
    base_path: str = ""  # appended to the guest base URL (OpenAI's clients expect /v1 in it)
    description: str = ""

    def guest_base_url(self, *, port: int = GUEST_GATEWAY_PORT) -> str:
        return f"http://127.0.0.1:{port}/{self.name}{self.base_path}"

    def auth_value(self, key: str) -> str:
        return f"{self.auth_scheme}{key}"

    def key_from_header(self, value: str) -> str:
        """The key (or token) in an auth header's value; "" when the scheme is wrong."""
        if not self.auth_scheme:
            return value.strip()
        scheme = self.auth_scheme.strip().lower()
        parts = value.strip().split(None, 1)
        return parts[1].strip() if len(parts) == 2 and parts[0].lower() == scheme else ""


PROVIDERS: tuple[Provider, ...] = (
    Provider(name="anthropic", host="api.anthropic.com", auth_header="x-api-key", auth_scheme="",
             key_env="ANTHROPIC_API_KEY", base_url_env=("ANTHROPIC_BASE_URL",),
             description="Anthropic (Claude, Claude Code)"),
    # OPENAI_API_BASE: what older clients (openai<1, aider's litellm in some versions) read.
    Provider(name="openai", host="api.openai.com", auth_header="authorization", auth_scheme="Bearer ",
             key_env="OPENAI_API_KEY", base_url_env=("OPENAI_BASE_URL", "OPENAI_API_BASE"), base_path="/v1",
             description="OpenAI (Codex, GPT models)"),
)


def provider_names() -> tuple[str, ...]:
    return tuple(p.name for p in PROVIDERS)


def find_provider(name: str) -> Provider | None:
    return next((p for p in PROVIDERS if p.name == name), None)


def get_provider(name: str) -> Provider:
    provider = find_provider(name.strip().lower())
    if provider is None:
        raise InvalidInput(f"unknown API provider {name!r}", hint="known providers: " + ", ".join(provider_names()))
    return provider
