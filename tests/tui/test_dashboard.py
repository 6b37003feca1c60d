"""The dashboard: what it lists, what it shows for the selected workspace, how it keeps
current, the command palette, and the doctor screen when libvirt cannot be reached."""

from __future__ import annotations

import re
from dataclasses import replace

from textual.widgets import DataTable

from agentbox.model.progress import CancelToken, ignore_progress
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.tui.app import AgentboxApp
from agentbox.tui.dashboard import EMPTY_TEXT
from agentbox.tui.dialogs import ConfirmScreen
from agentbox.tui.doctor_screen import DoctorScreen
from agentbox.tui.widgets import BUTTON_PREFIX

from .conftest import TEST_OPTIONS, TuiWorld, screen_text, settle, until


def rows(pilot) -> list[list[str]]:  # type: ignore[no-untyped-def]
    table = pilot.app.screen.query_one("#workspaces", DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def test_it_lists_every_workspace_with_state_template_network_and_last_reset(world: TuiWorld) -> None:
    world.make("demo")
    world.make("idle", running=False)
    world.services.snapshots.reset(name="demo", on_progress=ignore_progress, cancel=CancelToken())

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        assert rows(pilot) == [["demo", "● running", "-", "tiny", "⊘ off", "just now", "2025-03-14"],
                               ["idle", "○ stopped", "-", "tiny", "⊘ off", "never", "2025-03-14"]]
        text = screen_text(pilot)
        assert "2 workspace(s)" in text
        # The first one is selected: its details are beside the table.
        for shown in ("2 vCPU · 1024 MiB RAM · 8 GiB disk", "agentbox ssh demo", "ssh agentbox-demo",
                      "clean-1 (disk and RAM)", "09:30 reset target=clean path=snapshot"):
            assert shown in text

    world.run(scenario)


def test_the_network_column_shows_the_workspaces_own_policy(world: TuiWorld) -> None:
    world.make("demo")
    world.make("idle", running=False)
    world.services.network.set_mode(name="demo", mode="open")  # switched after create (the CLI's net)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        assert [row[4] for row in rows(pilot)] == ["◉ open", "⊘ off"]  # a mark and the word

    world.run(scenario)


def test_moving_the_cursor_shows_that_workspace_and_only_the_actions_that_apply(world: TuiWorld) -> None:
    world.make("demo")
    world.make("idle", running=False)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        text = screen_text(pilot)
        assert "x Stop" in text and "s Start" not in text
        await pilot.press("down")
        await settle(pilot)
        text = screen_text(pilot)
        assert re.search(r"▏ idle +○ stopped", text)  # the details pane, right of the table
        assert "s Start" in text and "x Stop" not in text and "o Shell" not in text
        assert pilot.app.screen.query_one("#do-start").display
        assert not pilot.app.screen.query_one("#do-stop").display

    world.run(scenario)


def test_more_running_workspaces_than_pooled_threads_do_not_freeze_the_dashboard(world: TuiWorld) -> None:
    """Every running workspace has an approval watch for as long as it runs; with more of them
    than Textual's worker pool has threads (six on two cores), loads and actions must still run."""
    names = [f"ws{index:02d}" for index in range(12)]
    for name in names:
        world.make(name)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await until(pilot, lambda: len(world.egress.streams) == len(names), what="every proxy is subscribed")
        await pilot.press("down", "down", "down")
        await until(pilot, lambda: re.search(r"▏ ws03 +● running", screen_text(pilot)) is not None,
                    what="the details follow the cursor")
        await pilot.press("x")  # stop ws03: an operation on a worker of its own
        await until(pilot, lambda: re.search(r"▏ ws03 +○ stopped", screen_text(pilot)) is not None,
                    what="the stop ran")

    world.run(scenario)


def test_a_broken_workspace_says_why_and_offers_only_audit_and_destroy(world: TuiWorld) -> None:
    world.make("demo")
    world.backend.destroy(name=world.domain("demo"))
    world.backend.undefine(name=world.domain("demo"))  # the VM vanished behind agentbox's back

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        text = screen_text(pilot)
        assert "✗ broken" in text
        assert "its VM is missing from libvirt" in text
        assert "Destroy (d)" in text and "Audit (a)" in text  # its only buttons
        assert "r Reset" not in text and "o Shell" not in text and "Shell (o)" not in text

    world.run(scenario)


def test_with_no_workspaces_it_invites_to_create_one(world: TuiWorld) -> None:
    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        text = screen_text(pilot)
        assert EMPTY_TEXT in text
        assert "n New" in text and "q Quit" in text
        assert "r Reset" not in text  # nothing selected: workspace actions are not offered

    world.run(scenario)


def test_a_background_worker_keeps_it_current(world: TuiWorld) -> None:
    """A workspace made elsewhere (another terminal, the CLI) appears by itself."""
    app = AgentboxApp(services=world.services, options=replace(TEST_OPTIONS, refresh_s=0.05),
                      terminal=world.terminal)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        assert EMPTY_TEXT in screen_text(pilot)
        create_workspace(ctx=world.ctx, request=CreateRequest(name="elsewhere"),
                         on_progress=ignore_progress, cancel=CancelToken())
        await until(pilot, lambda: "elsewhere" in screen_text(pilot), what="the new workspace is listed")
        assert EMPTY_TEXT not in screen_text(pilot)

    world.run(scenario, app=app)


def test_the_command_palette_offers_the_actions_for_the_selected_workspace(world: TuiWorld) -> None:
    world.make("demo")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("ctrl+p")
        await settle(pilot)
        await pilot.press(*"reset demo")
        await until(pilot, lambda: "Reset demo" in screen_text(pilot), what="the palette offers Reset demo")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ConfirmScreen)
        assert "Reset demo?" in screen_text(pilot)

    world.run(scenario)


def test_without_libvirt_it_shows_the_doctor_and_retry_opens_the_dashboard(world: TuiWorld) -> None:
    world.backend.reachable = False

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        assert isinstance(pilot.app.screen, DoctorScreen)
        text = screen_text(pilot)
        assert "agentbox cannot reach the hypervisor (libvirt)" in text
        assert "What to do: start libvirtd (sudo libvirtd -d), then retry" in text
        assert "✗ FAIL libvirt" in text  # from agentbox doctor's own checks
        assert "Traceback" not in text
        world.backend.reachable = True
        await pilot.press("r")
        await settle(pilot)
        assert not isinstance(pilot.app.screen, DoctorScreen)
        assert EMPTY_TEXT in screen_text(pilot)

    world.run(scenario)


def test_at_80x24_the_table_details_and_keys_all_fit(world: TuiWorld) -> None:
    world.make("demo")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        lines = screen_text(pilot).splitlines()
        assert len(lines) == 24 and all(len(line) <= 80 for line in lines)
        text = "\n".join(lines)
        assert re.search(r"demo +● running +- +tiny +⊘ off +never", text)  # the table
        assert "agentbox ssh demo" in text  # the details, below it
        assert "n New" in lines[-1] and "r Reset" in lines[-1]  # the footer

    world.run(scenario, size=(80, 24))


def test_at_80_columns_the_footer_shows_every_everyday_key_in_full(world: TuiWorld) -> None:
    world.make("demo")
    world.services.sessions.start(name="demo", max_minutes=None, on_progress=ignore_progress, cancel=CancelToken())

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        footer = screen_text(pilot).splitlines()[-1]
        for key in ("q Quit", "n New", "x Stop", "o Shell", "r Reset", "e End session", "w Network", "^p palette"):
            assert key in footer, footer  # none cut off, even with a session running (the most there are)
        # The rest are a key away too: each is a button labelled with its key.
        for button in ("Allowlist (l)", "Net log (g)", "Shares (f)", "Outbox (b)", "Destroy (d)"):
            shown = pilot.app.screen.query_one(f"#{BUTTON_PREFIX}{BUTTON_IDS[button]}")
            assert shown.display and str(shown.label) == button

    world.run(scenario, size=(80, 24))


BUTTON_IDS = {"Allowlist (l)": "allowlist", "Net log (g)": "net_log", "Shares (f)": "shares", "Outbox (b)": "outbox",
              "Destroy (d)": "destroy"}


def test_question_mark_lists_every_key(world: TuiWorld) -> None:
    world.make("demo")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("question_mark")
        await settle(pilot)
        text = screen_text(pilot)
        for key, label in (("l", "Allowlist"), ("g", "Net log"), ("f", "Shares"), ("b", "Outbox"),
                           ("k", "Checkpoints"), ("d", "Destroy")):
            assert re.search(rf"\b{key} +{label}", text), label
        await pilot.press("question_mark")  # and again hides it
        await settle(pilot)
        assert not re.search(r"\bg +Net log", screen_text(pilot))

    world.run(scenario)


def test_the_details_show_each_budgets_use_against_its_limit(world: TuiWorld) -> None:
    world.make("demo")
    world.services.budgets.set(name="demo", egress_bytes=100 << 20, cpu_seconds=600)
    world.services.sessions.start(name="demo", max_minutes=None, on_progress=lambda _: None, cancel=CancelToken())
    world.ctx.backend.add_usage(world.domain("demo"), cpu_seconds=42.0)  # type: ignore[attr-defined]

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        text = screen_text(pilot)
        assert re.search(r"Budgets +egress_bytes: 0 B of 100\.0 MiB", text)
        assert "cpu_seconds: 42.0 s of 600.0 s" in text

    world.run(scenario)
