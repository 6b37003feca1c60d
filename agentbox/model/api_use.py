"""A session's API budget and what it has used of it, as the credential gateway counts it."""

from __future__ import annotations

from dataclasses import dataclass

from agentbox.errors import InvalidInput


@dataclass(frozen=True)
class ApiBudget:
    """Per session; 0 means no limit on that count."""

    requests: int = 0
    bytes: int = 0  # up and down together
    tokens: int = 0  # as the provider's responses report them (`usage`)

    def __post_init__(self) -> None:
        for name in ("requests", "bytes", "tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidInput(f"budget {name} must be a whole number >= 0, not {value!r}",
                                   hint="e.g. budget: {requests: 200, bytes: 50000000, tokens: 2000000}; 0 = no limit")

    @property
    def unlimited(self) -> bool:
        return not (self.requests or self.bytes or self.tokens)


@dataclass(frozen=True)
class ApiUse:
    requests: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    tokens: int = 0
    refused: int = 0  # requests the gateway did not forward (receipts only)

    def plus(self, other: ApiUse) -> ApiUse:
        return ApiUse(requests=self.requests + other.requests, bytes_up=self.bytes_up + other.bytes_up,
                      bytes_down=self.bytes_down + other.bytes_down, tokens=self.tokens + other.tokens,
                      refused=self.refused + other.refused)

    def exhausted(self, budget: ApiBudget) -> str:
        """Which budget this use has reached ("" when none): a next request is refused."""
        if budget.requests and self.requests >= budget.requests:
            return f"requests ({self.requests} of {budget.requests})"
        if budget.bytes and self.bytes_up + self.bytes_down >= budget.bytes:
            return f"bytes ({self.bytes_up + self.bytes_down} of {budget.bytes})"
        if budget.tokens and self.tokens >= budget.tokens:
            return f"tokens ({self.tokens} of {budget.tokens})"
        return ""
