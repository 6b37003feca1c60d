"""Command-palette entries (Ctrl+P) for whatever the active screen offers right now.

A screen lists its entries in `palette_commands()`; this provider only matches and runs
them, so it needs to know nothing about any particular screen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from textual.command import DiscoveryHit, Hit, Hits, Provider


@dataclass(frozen=True)
class PaletteCommand:
    title: str  # "Reset demo"
    help: str
    run: Callable[[], object]


class ScreenCommands(Provider):
    def _commands(self) -> list[PaletteCommand]:
        offer = getattr(self.screen, "palette_commands", None)
        return list(offer()) if callable(offer) else []

    async def discover(self) -> Hits:
        for command in self._commands():
            yield DiscoveryHit(command.title, command.run, help=command.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in self._commands():
            score = matcher.match(command.title)
            if score > 0:
                yield Hit(score, matcher.highlight(command.title), command.run, help=command.help)
