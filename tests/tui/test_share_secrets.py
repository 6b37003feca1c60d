"""Sharing a folder with likely secrets from the TUI: the findings are shown (file and rule,
never the secret) and the user leaves them out, shares anyway, or does not share."""

from __future__ import annotations

import json

from textual.widgets import DataTable, Input

from agentbox.tui.secrets_screen import SecretsScreen
from agentbox.tui.shares_screen import SharesScreen

from .conftest import TuiWorld, screen_text, settle, until
from .test_shares_and_outbox import open_add_share


def test_findings_are_shown_and_can_be_left_out(world: TuiWorld) -> None:
    world.make("demo")
    alpha = world.home / "projects" / "alpha"
    (alpha / ".env").write_text("TOKEN=hunter2\n")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        dialog = await open_add_share(pilot)
        dialog.query_one("#share-folder-path", Input).value = str(alpha)
        await pilot.pause()
        await pilot.click("#share")
        await until(pilot, lambda: isinstance(pilot.app.screen, SecretsScreen), what="the findings")
        text = screen_text(pilot)
        assert "1 likely secret(s) in" in text and "• .env: dotenv file" in text and "hunter2" not in text
        await pilot.press("escape")  # do not share: nothing happens
        await settle(pilot)
        assert isinstance(pilot.app.screen, SharesScreen) and world.services.shares.list(name="demo") == ()
        dialog = await open_add_share(pilot)
        dialog.query_one("#share-folder-path", Input).value = str(alpha)
        await pilot.pause()
        await pilot.click("#share")
        await until(pilot, lambda: isinstance(pilot.app.screen, SecretsScreen), what="the findings again")
        await pilot.press("e")
        await until(pilot, lambda: isinstance(pilot.app.screen, SharesScreen)
                    and bool(world.services.shares.list(name="demo")), what="shared")
        await settle(pilot)
        [status] = world.services.shares.list(name="demo")
        assert status.share.excluded == (".env",) and status.share.mechanism.value == "copy-disk"
        row = [str(c) for c in pilot.app.screen.query_one("#shares", DataTable).get_row_at(0)]
        assert row[6].startswith("✓ write refused") and row[7] == "1 left out"
        added = [e for e in world.audit("demo") if e["event"] == "share.added"][-1]
        assert json.dumps(added).count("hunter2") == 0 and added["details"]["secrets_choice"] == "exclude"

    world.run(scenario)
