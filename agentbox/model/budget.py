"""A session's host budgets (egress bytes, disk writes, CPU time): limits, sizes as people
write them, and which one a session's use has reached. The API budget (requests, bytes and
tokens through the credential gateway) is model/api_use.py; both come from one template
`budget:` mapping."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from agentbox.errors import InvalidInput

BUDGET_MAX = 1 << 50
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40}
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600}


class OnExceeded(StrEnum):
    """What hitting a budget does to the session."""

    END = "end"  # end the session as the policy says: receipt, then reset (unless reset_after_session: false)
    PAUSE = "pause"  # pause the guest and keep the session open (resume it, or end the session)


@dataclass(frozen=True)
class HostBudget:
    """Per session, enforced on the host; 0 means no limit on that count."""

    egress_bytes: int = 0  # through the egress proxy, up and down together
    disk_write_bytes: int = 0  # the guest's writes to its disks (the hypervisor's block stats)
    cpu_seconds: int = 0  # the guest's CPU time (all vCPUs together)
    on_exceeded: OnExceeded = OnExceeded.END

    def __post_init__(self) -> None:
        for name in ("egress_bytes", "disk_write_bytes", "cpu_seconds"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= BUDGET_MAX:
                raise InvalidInput(f"budget {name} must be a whole number >= 0, not {value!r}",
                                   hint="e.g. budget: {egress_bytes: 100M, disk_write_bytes: 2G, cpu_seconds: 3600}")
        if not isinstance(self.on_exceeded, OnExceeded):
            raise InvalidInput(f"budget on_exceeded {self.on_exceeded!r} is not one of end, pause")

    @property
    def unlimited(self) -> bool:
        return not (self.egress_bytes or self.disk_write_bytes or self.cpu_seconds)


@dataclass(frozen=True)
class HostUse:
    """What a session has used so far; None where it cannot be measured (the backend says so)."""

    egress_bytes: int = 0
    disk_write_bytes: int | None = None
    cpu_seconds: float | None = None


@dataclass(frozen=True)
class BudgetLine:
    """One budget of a session, for its receipt and the status views."""

    budget: str
    limit: int
    used: float
    measured: bool  # False: the backend cannot measure it (used is 0 then)
    exceeded: bool

    def describe(self) -> str:
        used = format_amount(self.budget, self.used) if self.measured else "not measured"
        return f"{self.budget}: {used} of {format_amount(self.budget, self.limit)}" + \
            (" (exceeded)" if self.exceeded else "")


@dataclass(frozen=True)
class Exceeded:
    budget: str  # egress_bytes, disk_write_bytes or cpu_seconds
    used: float
    limit: int

    def describe(self) -> str:
        return f"budget {self.budget} exceeded ({format_amount(self.budget, self.used)} of " \
               f"{format_amount(self.budget, self.limit)})"


def first_exceeded(*, use: HostUse, budget: HostBudget) -> Exceeded | None:
    """The first budget `use` has reached, or None."""
    for name in ("egress_bytes", "disk_write_bytes", "cpu_seconds"):
        limit, used = getattr(budget, name), getattr(use, name)
        if limit and used is not None and used >= limit:
            return Exceeded(budget=name, used=used, limit=limit)
    return None


def parse_size(*, text: str | int, what: str) -> int:
    """Bytes from `100M`, `1.5GiB`, `2048` (k/M/G/T are powers of 10, Ki/Mi/Gi/Ti of 2)."""
    if isinstance(text, int) and not isinstance(text, bool):
        number, unit = float(text), ""
    else:
        match = _SIZE.match(str(text))
        if match is None:
            raise InvalidInput(f"{what} {text!r} is not a size",
                               hint="a number of bytes with an optional unit: 500M, 2G, 1.5GiB, 0 = no limit")
        number, unit = float(match.group(1)), (match.group(2) or "").lower().removesuffix("b")
    value = int(number * _UNITS[unit])
    if not 0 <= value <= BUDGET_MAX:
        raise InvalidInput(f"{what} {text!r} is out of range", hint=f"at most {BUDGET_MAX} bytes")
    return value


def parse_seconds(*, text: str | int, what: str) -> int:
    """Seconds from `600`, `600s`, `10m`, `2h`."""
    if isinstance(text, int) and not isinstance(text, bool):
        number, unit = float(text), ""
    else:
        match = _DURATION.match(str(text))
        if match is None:
            raise InvalidInput(f"{what} {text!r} is not a duration", hint="seconds, or with a unit: 600, 90s, 10m, 2h")
        number, unit = float(match.group(1)), (match.group(2) or "").lower()
    value = int(number * _SECONDS[unit])
    if not 0 <= value <= BUDGET_MAX:
        raise InvalidInput(f"{what} {text!r} is out of range")
    return value


# `create`'s options for the host budgets; the wizard's fields parse with the same names, so
# a bad value reads the same in both.
CREATE_OPTIONS = (("egress_bytes", "--egress-budget"), ("disk_write_bytes", "--disk-write-budget"),
                  ("cpu_seconds", "--cpu-budget"))


def parse_budget(*, budget: str, text: str | int, what: str) -> int:
    """A limit for `budget` (egress_bytes, disk_write_bytes: a size; cpu_seconds: a duration)."""
    if budget == "cpu_seconds":
        return parse_seconds(text=text, what=what)
    return parse_size(text=text, what=what)


def input_text(budget: str, value: int) -> str:
    """A limit as people type it, exactly (3600 → 1h, 100000000 → 100M); "" for no limit."""
    if not value:
        return ""
    units = (("h", 3600), ("m", 60)) if budget == "cpu_seconds" else \
        (("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10))
    for unit, size in units:
        if value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


def format_amount(budget: str, value: float) -> str:
    if budget == "cpu_seconds":
        return f"{value:.1f} s"
    return format_bytes(int(value))


def format_bytes(value: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"
