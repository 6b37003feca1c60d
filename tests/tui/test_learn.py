"""After a learning session the TUI offers the proposed allowlist as a checklist: untick what
should not stay, apply (mode allowlist) or save it as a template."""

from __future__ import annotations

import yaml
from textual.widgets import Input, SelectionList

from agentbox.model.network import NetworkMode
from agentbox.tui.dashboard import DashboardScreen
from agentbox.tui.proposal_screen import ProposalScreen

from .conftest import TuiWorld, screen_text, settle, until


def test_leaving_learn_mode_shows_the_checklist_and_applies_what_is_ticked(world: TuiWorld) -> None:
    world.make("demo")
    world.services.network.set_mode(name="demo", mode="learn")
    for host in ("pypi.org", "files.pythonhosted.org", "tracker.example"):
        world.log_connection("demo", host=host, allowed=True, rule="mode:learn")
    world.log_connection("demo", host="refused.example", allowed=False, rule="blocked:loopback")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        await pilot.press("w")
        await settle(pilot)
        assert "Allowlist (2) first shows what was learned" in screen_text(pilot)
        await pilot.press("2")
        await until(pilot, lambda: isinstance(pilot.app.screen, ProposalScreen)
                    and "3 allowed and 1 refused" in screen_text(pilot), what="the checklist")
        assert world.services.network.policy(name="demo").mode is NetworkMode.LEARN, "nothing changed yet"
        text = screen_text(pilot)
        for entry in ("files.pythonhosted.org:443", "pypi.org:443", "tracker.example:443"):
            assert entry in text
        assert "refused.example" not in text
        choices = pilot.app.screen.query_one(SelectionList)
        assert sorted(choices.selected) == ["files.pythonhosted.org:443", "pypi.org:443", "tracker.example:443"]
        choices.deselect("tracker.example:443")  # the user unticks what should not stay
        await settle(pilot)
        pilot.app.screen.query_one("#template", Input).value = "pypi-only"
        await pilot.click("#save")
        await until(pilot, lambda: "saved as template 'pypi-only'" in screen_text(pilot), what="saved")
        saved = yaml.safe_load((world.ctx.catalogue.user_dir / "pypi-only.yaml").read_text())
        assert saved["policy"] == {**saved["policy"], "network": "allowlist",
                                   "allowlist": ["files.pythonhosted.org:443", "pypi.org:443"]}
        await pilot.press("ctrl+a")
        await until(pilot, lambda: isinstance(pilot.app.screen, DashboardScreen), what="back")
        policy = world.services.network.policy(name="demo")
        assert policy.mode is NetworkMode.ALLOWLIST
        assert policy.render() == ("files.pythonhosted.org:443", "pypi.org:443")
        assert world.events("demo")[-2:] == ["network.policy", "network.proposal_applied"]

    world.run(scenario)


def test_other_mode_switches_from_learn_go_straight_there(world: TuiWorld) -> None:
    world.make("demo")
    world.services.network.set_mode(name="demo", mode="learn")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        await pilot.press("w", "1")
        await until(pilot, lambda: world.services.network.policy(name="demo").mode is NetworkMode.OFF, what="off")
        assert isinstance(pilot.app.screen, DashboardScreen)

    world.run(scenario)
