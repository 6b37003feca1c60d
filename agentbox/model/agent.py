"""An AI agent a template ships: how it is started and which provider APIs it talks to."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PROVIDERS", "AgentSpec"]

# The providers the credential gateway knows (`agentbox key set NAME`). An agent's API
# traffic goes through the gateway, never through the egress allowlist.
PROVIDERS = ("anthropic", "openai")


@dataclass(frozen=True)
class AgentSpec:
    name: str  # e.g. "claude-code"; what `agentbox agent WORKSPACE --agent NAME` picks
    command: str  # run in a login shell of the guest user, in the project folder
    description: str  # one line, shown in the wizard
    providers: tuple[str, ...]  # from PROVIDERS: the keys it needs
    api_hosts: tuple[str, ...]  # the provider hosts the gateway forwards its calls to
