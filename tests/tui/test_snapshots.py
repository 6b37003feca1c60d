"""Snapshot tests: the dashboard, the wizard, the approval prompt and an error, at 80x24 and
120x40.

Deterministic by construction: a fixed clock (every time shown comes from it), fixed names,
TZ=UTC, and nothing on screen that comes from the wall clock or a random port. Update the
baselines with `--snapshot-update` and look at them before committing.
"""

from __future__ import annotations

import pytest

from agentbox.backends.base import DomainState
from agentbox.model.progress import CancelToken, ignore_progress
from agentbox.tui.approval_screen import ApprovalScreen

from .conftest import TuiWorld, settle, until

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


def populate(world: TuiWorld) -> None:
    world.make("demo")
    world.make("scratch", running=False)
    world.services.snapshots.reset(name="demo", on_progress=ignore_progress, cancel=CancelToken())
    world.services.snapshots.checkpoint(name="demo", label="before-upgrade")
    world.services.sessions.start(name="demo", max_minutes=30, on_progress=ignore_progress, cancel=CancelToken())
    network = world.services.network
    network.set_mode(name="demo", mode="allowlist")
    network.allow(name="demo", entry="pypi.org")
    world.log_connection("demo", host="pypi.org", allowed=True, rule="pypi.org")
    world.log_connection("demo", host="evil.example", allowed=False, rule="not-listed", minute=32)
    world.services.shares.add(name="demo", source=str(world.home / "projects" / "alpha"), mechanism="copy-disk")
    outbox = world.services.outbox.directory(name="demo")
    outbox.mkdir(exist_ok=True)  # made at boot only where virtiofs works: the same on every host here
    (outbox / "report.md").write_text("done\n")


@pytest.mark.parametrize("size", SIZES)
def test_dashboard(world: TuiWorld, snap_compare, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    populate(world)
    assert snap_compare(world.app(), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", SIZES)
def test_wizard(world: TuiWorld, snap_compare, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    populate(world)

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        await pilot.press("tab")  # what to run: a plain VM (the default template has no agent)
        await pilot.press(*"my-agent")

    assert snap_compare(world.app(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_error(world: TuiWorld, snap_compare, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    populate(world)

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        world.backend.set_state(world.domain("demo"), DomainState.STOPPED)  # behind the TUI's back
        await pilot.press("c")
        await settle(pilot)

    assert snap_compare(world.app(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_approval_prompt(world: TuiWorld, snap_compare, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    populate(world)

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        world.egress.hold("demo", host="registry.npmjs.org", port=443)
        world.egress.hold("demo", host="evil.example", port=443, request_id="2")
        await until(pilot, lambda: isinstance(pilot.app.screen, ApprovalScreen), what="the prompt")
        await until(pilot, lambda: "1 more request" in str(pilot.app.screen.query_one("#approval-waiting").content),
                    what="the second request is counted")
        await settle(pilot)

    assert snap_compare(world.app(), terminal_size=size, run_before=run_before)
