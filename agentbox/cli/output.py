"""Tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from agentbox.errors import InvalidInput


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    for row in (headers, *rows):
        line = "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        sys.stdout.write(line.rstrip() + "\n")


def confirmed(*, question: str, expected: tuple[str, ...], what: str, hint: str) -> bool:
    """Ask on the terminal; without one, refuse (scripts pass --yes instead)."""
    if not sys.stdin.isatty():
        raise InvalidInput(f"{what} needs confirmation", hint=hint)
    return input(question).strip().lower() in expected
