"""The New workspace wizard and the create it starts: live checks, templates, progress, cancel."""

from __future__ import annotations

import re
import threading

from textual.widgets import Button, Input, ProgressBar, Select

from agentbox.backends.base import DomainState
from agentbox.services.create import STEPS
from agentbox.tui.progress_screen import ProgressScreen
from agentbox.tui.widgets import FolderTree
from agentbox.tui.wizard import ChosenFolders, NewWorkspaceScreen, run_choices

from .conftest import TuiWorld, screen_text, settle, until


async def open_wizard(pilot, *, run: str = "plain") -> NewWorkspaceScreen:  # type: ignore[no-untyped-def]
    """Open it and answer its first question, what to run (a plain VM unless `run` names an
    agent template): then the name has the focus."""
    await pilot.press("n")
    await settle(pilot)
    wizard = pilot.app.screen
    assert isinstance(wizard, NewWorkspaceScreen)
    what = wizard.query_one("#what", Select)
    assert what.has_focus
    if run == "plain" and what.value == "plain":
        await pilot.press("tab")  # already the answer
    else:
        await pilot.press("enter")  # open the list, then down (or up) to the choice
        values = [value for _, value in run_choices(tuple(wizard._templates.values()))]
        steps = values.index(run) - values.index(str(what.value))
        await pilot.press(*(["down"] * steps if steps > 0 else ["up"] * -steps), "enter")
    await pilot.pause()
    assert wizard.query_one("#name", Input).has_focus
    return wizard


def test_the_name_is_checked_as_it_is_typed(world: TuiWorld) -> None:
    world.make("demo")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        wizard = await open_wizard(pilot)
        create = wizard.query_one("#create", Button)
        await pilot.press(*"My")
        assert "✗ invalid workspace name 'My'" in screen_text(pilot)
        assert create.disabled
        wizard.query_one("#name", Input).value = ""
        await pilot.press(*"demo")
        await pilot.pause()
        assert "✗ a workspace named demo already exists" in screen_text(pilot)
        assert create.disabled
        await pilot.press(*"-2")
        await pilot.pause()
        assert "✓ demo-2 is a good name" in screen_text(pilot)
        assert not create.disabled

    world.run(scenario)


def test_templates_come_from_the_catalogue_and_fill_in_their_resources(world: TuiWorld) -> None:
    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        wizard = await open_wizard(pilot)
        select = wizard.query_one("#template", Select)
        assert select.value == "tiny"  # the settings' default template
        assert [wizard.query_one(f"#{f}", Input).value for f in ("cpus", "memory", "disk")] == ["2", "1024", "8"]
        assert "a tiny test image" in screen_text(pilot)
        select.focus()
        await pilot.press("enter")  # open the list: every template is offered
        await pilot.pause()
        text = screen_text(pilot)
        assert all(name in text for name in ("debian-12", "tiny", "ubuntu-24.04"))
        await pilot.press("down", "enter")  # tiny → ubuntu-24.04
        await pilot.pause()
        assert select.value == "ubuntu-24.04"
        assert [wizard.query_one(f"#{f}", Input).value for f in ("cpus", "memory", "disk")] == ["2", "2048", "12"]
        assert "Ubuntu 24.04 LTS (noble) official cloud image" in screen_text(pilot)

    world.run(scenario)


def test_resources_out_of_the_services_range_are_refused_in_the_wizard(world: TuiWorld) -> None:
    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        wizard = await open_wizard(pilot)
        await pilot.press(*"big")
        wizard.query_one("#cpus", Input).value = "99"
        await pilot.press("enter")
        await settle(pilot)
        assert pilot.app.screen is wizard
        assert "✗ --cpus 99 is out of range 1..64" in screen_text(pilot)
        assert world.ctx.records.names() == ()

    world.run(scenario)


def test_create_shows_each_step_then_selects_the_ready_workspace(world: TuiWorld) -> None:
    world.guest.hold = threading.Event()  # stop at "waiting for SSH" to look at the progress

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        wizard = await open_wizard(pilot)
        await pilot.press(*"fresh")
        wizard.query_one("#cpus", Input).value = "3"
        await pilot.click("#create")
        await until(pilot, world.guest.waiting.is_set, what="the create reaches the SSH wait")
        progress = pilot.app.screen
        assert isinstance(progress, ProgressScreen)
        await until(pilot, lambda: "ssh: waiting for SSH" in screen_text(pilot), what="the step is shown")
        step, total = STEPS.index("ssh") + 1, len(STEPS)
        text = screen_text(pilot)
        assert "Creating fresh" in text and f"[{step}/{total}] ssh: waiting for SSH on 127.0.0.1:" in text
        assert "Esc cancels" in text
        bar = progress.query_one(ProgressBar)
        assert (bar.progress, bar.total) == (step - 1, total)  # the steps before this one are done
        world.guest.hold.set()
        await settle(pilot)
        record = world.ctx.records.load(name="fresh")
        assert record is not None and record.resources.vcpus == 3
        assert world.state("fresh") is DomainState.RUNNING
        assert world.events("fresh")[-1] == "created"
        text = screen_text(pilot)
        assert re.search(r"▏ fresh +● running", text)  # selected, details shown
        assert re.search(r"fresh is ready \(\d+\.\d s\): press o for a shell", text)

    world.run(scenario)


def test_escape_cancels_a_create_half_way_and_leaves_nothing(world: TuiWorld) -> None:
    world.guest.hold = threading.Event()  # never released: only the cancel ends the wait

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await open_wizard(pilot)
        await pilot.press(*"doomed", "enter")
        await until(pilot, world.guest.waiting.is_set, what="the create reaches the SSH wait")
        assert world.state("doomed") is DomainState.RUNNING  # it got that far
        await pilot.press("escape")
        await settle(pilot)
        assert world.state("doomed") is None
        assert world.ctx.records.names() == ()
        assert not list((world.ctx.settings.storage_dir / "workspaces").glob("*"))
        text = screen_text(pilot)
        assert "Creating doomed: cancelled" in text
        assert "No workspaces yet" in text

    world.run(scenario)


def test_escape_closes_the_wizard_without_creating_anything(world: TuiWorld) -> None:
    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await open_wizard(pilot)
        await pilot.press(*"later", "escape")
        await settle(pilot)
        assert not isinstance(pilot.app.screen, NewWorkspaceScreen)
        assert world.ctx.records.names() == ()
        assert world.backend.calls == [("list_domains", "")] * len(world.backend.calls)  # only looked

    world.run(scenario)


def test_the_empty_dashboards_button_opens_the_wizard(world: TuiWorld) -> None:
    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.click("#do-new")
        await settle(pilot)
        assert isinstance(pilot.app.screen, NewWorkspaceScreen)

    world.run(scenario)


def test_the_wizard_shares_folders_and_sets_the_network_and_allowlist(world: TuiWorld) -> None:
    alpha, notes = world.home / "projects" / "alpha", world.home / "notes"

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        wizard = await open_wizard(pilot)
        await pilot.press(*"fresh")
        tree = wizard.query_one(FolderTree)
        await until(pilot, lambda: len(tree.root.children) == 2, what="the home folder is listed")
        tree.focus()
        await pilot.press("down", "tab", "enter")  # notes highlighted fills the path; Enter there adds it
        path = wizard.query_one("#wizard-folder-path", Input)
        path.value = str(alpha)  # or typed
        await pilot.press("enter")
        await pilot.pause()
        chosen = wizard.query_one(ChosenFolders)
        assert [str(chosen.get_option_at_index(i).prompt) for i in range(chosen.option_count)] == [
            f"{notes} → /mnt/shares/notes", f"{alpha} → /mnt/shares/alpha"]
        path.value = str(world.home)  # refused before anything is made, with the service's reason
        await pilot.press("enter")
        await pilot.pause()
        assert "✗ refusing to share your whole home folder" in screen_text(pilot)
        assert chosen.option_count == 2

        wizard.query_one("#network", Select).value = "allowlist"
        allowlist = wizard.query_one("#allowlist", Input)
        allowlist.focus()
        await pilot.press(*"pypi.org, http://bad/")
        await pilot.pause()
        assert "✗ invalid allowlist entry 'http://bad/'" in screen_text(pilot)
        await pilot.press("enter")  # not created with a bad entry
        await settle(pilot)
        assert pilot.app.screen is wizard and world.ctx.records.names() == ()
        allowlist.value = "pypi.org *.GitHub.com"
        await pilot.pause()
        assert "It starts with network allowlist" in screen_text(pilot)
        await pilot.click("#create")
        await settle(pilot)

        assert world.ctx.records.names() == ("fresh",)
        policy = world.services.network.policy(name="fresh")
        assert (policy.mode.value, policy.render()) == ("allowlist", ("pypi.org", "*.github.com"))
        shares = world.services.shares.list(name="fresh")
        assert sorted((s.share.tag, s.share.source) for s in shares) == [("alpha", str(alpha)),
                                                                         ("notes", str(notes))]
        assert all(s.attached for s in shares)
        assert re.search(r"fresh is ready \(\d+\.\d s, 2 allowlist entries\): press o for a shell", screen_text(pilot))

    world.run(scenario)


def test_a_folder_can_be_taken_off_the_list_before_creating(world: TuiWorld) -> None:
    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        wizard = await open_wizard(pilot)
        await pilot.press(*"fresh")
        wizard.query_one("#wizard-folder-path", Input).value = str(world.home / "notes")
        wizard.query_one("#wizard-folder-path", Input).focus()
        await pilot.press("enter")
        await pilot.pause()
        chosen = wizard.query_one(ChosenFolders)
        assert chosen.option_count == 1 and chosen.display
        chosen.focus()
        await pilot.press("delete")
        await pilot.pause()
        assert chosen.option_count == 0 and not chosen.display
        await pilot.click("#create")
        await settle(pilot)
        assert world.services.shares.list(name="fresh") == ()
        assert world.services.network.policy(name="fresh").mode.value == "off"  # the template's

    world.run(scenario)


def test_a_folder_with_secrets_asks_before_create_and_leaves_them_out(world: TuiWorld) -> None:
    from agentbox.tui.secrets_screen import SecretsScreen

    alpha = world.home / "projects" / "alpha"
    (alpha / ".env").write_text("TOKEN=hunter2\n")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        wizard = await open_wizard(pilot)
        await pilot.press(*"fresh")
        wizard.query_one("#wizard-folder-path", Input).value = str(alpha)
        wizard.query_one("#wizard-folder-path", Input).focus()
        await pilot.press("enter")
        await pilot.pause()
        assert wizard.query_one(ChosenFolders).option_count == 1
        await pilot.click("#create")
        await until(pilot, lambda: isinstance(pilot.app.screen, SecretsScreen), what="the findings")
        assert "• alpha/.env: dotenv file" in screen_text(pilot) and world.ctx.records.names() == ()
        await pilot.press("e")
        await until(pilot, lambda: world.ctx.records.names() == ("fresh",), what="created")
        await settle(pilot)
        [status] = world.services.shares.list(name="fresh")
        assert status.share.excluded == (".env",) and status.share.mechanism.value == "copy-disk"

    world.run(scenario)


def test_budgets_come_from_the_template_and_land_in_the_created_workspace(world: TuiWorld) -> None:
    template = world.ctx.paths.user_templates_dir / "tiny.yaml"
    template.write_text(template.read_text() + "budget:\n  egress_bytes: 100M\n  cpu_seconds: 3600\n")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        wizard = await open_wizard(pilot)
        fields = {budget: wizard.query_one(f"#budget-{budget}", Input)
                  for budget in ("egress_bytes", "disk_write_bytes", "cpu_seconds")}
        assert {budget: box.value for budget, box in fields.items()} == {
            "egress_bytes": "100M", "disk_write_bytes": "", "cpu_seconds": "1h"}  # the template's
        await pilot.press(*"capped")
        fields["disk_write_bytes"].value = "lots"
        await pilot.press("enter")
        await settle(pilot)
        problem = str(wizard.query_one("#budgets-problem").content)
        assert pilot.app.screen is wizard and world.ctx.records.names() == ()
        assert "✗ --disk-write-budget 'lots' is not a size" in problem  # what `create` says
        assert "What to do: a number of bytes with an optional unit: 500M, 2G" in problem
        fields["disk_write_bytes"].value = "2G"
        await pilot.pause()
        assert str(wizard.query_one("#budgets-problem").content) == ""  # typing clears it
        fields["egress_bytes"].value = "50M"
        wizard.query_one("#name", Input).focus()
        await pilot.press("enter")
        await settle(pilot)
        record = world.ctx.records.load(name="capped")
        assert record is not None
        budget = record.host_budget
        assert (budget.egress_bytes, budget.disk_write_bytes, budget.cpu_seconds) == (50_000_000, 2_000_000_000, 3600)

    world.run(scenario)
