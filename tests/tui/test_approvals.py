"""Approvals: a connection the proxy holds in allowlist mode is put to the person at the TUI,
who answers Allow once / Always / Deny by key or mouse before the countdown runs out. The
answer goes back to the proxy (the stand-in records it) and into the audit log."""

from __future__ import annotations

import threading

from agentbox.egress.approvals import ApprovalVerdict
from agentbox.model.progress import CancelToken, ignore_progress
from agentbox.tui.approval_screen import ApprovalScreen
from agentbox.tui.dashboard import DashboardScreen
from agentbox.tui.progress_screen import ProgressScreen

from .conftest import TuiWorld, screen_text, settle, until
from .test_actions import status


async def prompt(pilot, *, busy: bool = False) -> ApprovalScreen:  # type: ignore[no-untyped-def]
    await until(pilot, lambda: isinstance(pilot.app.screen, ApprovalScreen), what="the approval prompt")
    if busy:  # an operation is held half-way: settling would wait for it
        await pilot.pause()
    else:
        await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, ApprovalScreen)
    return screen


async def answered(pilot, world: TuiWorld, count: int) -> None:  # type: ignore[no-untyped-def]
    await until(pilot, lambda: len(world.egress.answers) == count and "→" in status(pilot),
                what=f"{count} answer(s) reach the proxy")
    await settle(pilot)


def approvals(world: TuiWorld, name: str = "demo") -> list[dict[str, object]]:
    return [r["details"] for r in world.audit(name) if r["event"] == "network.approval"]


def test_allow_once_names_the_workspace_and_destination_and_answers_the_proxy(world: TuiWorld) -> None:
    world.make("demo")
    world.services.network.set_mode(name="demo", mode="allowlist")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        world.egress.hold("demo", host="registry.npmjs.org", port=443)
        await prompt(pilot)
        text = screen_text(pilot)
        assert "Allow demo to connect to registry.npmjs.org:443?" in text
        assert "The agent in demo is trying to reach registry.npmjs.org on port 443." in text
        assert "Denied in 30 s unless you answer" in text  # the countdown
        assert "Allow once (o)" in text and "Always (a)" in text and "Deny (d)" in text
        assert world.egress.answers == []  # nothing is decided before the person answers
        await pilot.press("o")
        await answered(pilot, world, 1)
        assert world.egress.answers == [("demo", "1", ApprovalVerdict.ALLOW_ONCE)]
        assert isinstance(pilot.app.screen, DashboardScreen)
        assert status(pilot) == "demo → registry.npmjs.org:443: allowed once"
        [record] = approvals(world)
        assert record == {"host": "registry.npmjs.org", "port": 443, "address": "", "method": "CONNECT",
                          "verdict": "allow_once", "applied": True, "by": "tui"}

    world.run(scenario)


def test_always_and_deny_work_with_the_mouse_and_requests_wait_their_turn(world: TuiWorld) -> None:
    world.make("demo")
    world.make("other")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        world.egress.hold("demo", host="pypi.org", port=443, request_id="7")
        first = await prompt(pilot)
        world.egress.hold("other", host="evil.example", port=80, request_id="8")
        await until(pilot, lambda: "1 more request(s) waiting" in screen_text(pilot), what="the second is counted")
        await pilot.click("#always")
        await until(pilot, lambda: pilot.app.screen is not first and isinstance(pilot.app.screen, ApprovalScreen),
                    what="the second prompt")
        await settle(pilot)
        assert "Allow other to connect to evil.example:80?" in screen_text(pilot)  # the other workspace's turn
        await pilot.click("#deny")
        await answered(pilot, world, 2)
        assert world.egress.answers == [("demo", "7", ApprovalVerdict.ALLOW_ALWAYS),
                                        ("other", "8", ApprovalVerdict.DENY)]
        assert [r["verdict"] for r in approvals(world, "demo")] == ["allow_always"]
        assert [r["verdict"] for r in approvals(world, "other")] == ["deny"]
        assert status(pilot) == "other → evil.example:80: denied"

    world.run(scenario)


def test_escape_denies(world: TuiWorld) -> None:
    world.make("demo")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        world.egress.hold("demo", host="pypi.org")
        await prompt(pilot)
        await pilot.press("escape")
        await answered(pilot, world, 1)
        assert world.egress.answers == [("demo", "1", ApprovalVerdict.DENY)]

    world.run(scenario)


def test_the_countdown_runs_down_and_then_the_prompt_goes_without_answering(world: TuiWorld) -> None:
    world.make("demo")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        world.egress.hold("demo", host="pypi.org")
        screen = await prompt(pilot)
        world.clock.advance(12)
        await until(pilot, lambda: "Denied in 18 s unless you answer" in screen_text(pilot), what="it counts down")
        world.clock.advance(18)
        await until(pilot, lambda: not screen.is_attached, what="the prompt goes by itself")
        await settle(pilot)
        assert world.egress.answers == []  # the proxy denies by itself; nothing is sent
        assert status(pilot) == "demo → pypi.org:443: no answer in time, the proxy denied it"

    world.run(scenario)


def test_an_answer_the_proxy_no_longer_wants_says_it_was_too_late(world: TuiWorld) -> None:
    world.make("demo")
    world.egress.decided.add("1")  # e.g. another approver answered first

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        world.egress.hold("demo", host="pypi.org")
        await prompt(pilot)
        await pilot.press("o")
        await answered(pilot, world, 1)
        assert status(pilot) == "demo → pypi.org:443: too late, the proxy had already denied it"
        [record] = approvals(world)
        assert record["verdict"] == "allow_once" and record["applied"] is False

    world.run(scenario)


def test_only_running_workspaces_are_watched_and_a_stop_ends_the_watch(world: TuiWorld) -> None:
    world.make("demo")
    world.make("idle", running=False)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        dashboard = pilot.app.screen
        assert isinstance(dashboard, DashboardScreen)
        await until(pilot, lambda: len(world.egress.streams) == 1, what="demo's proxy is subscribed")
        assert dashboard._desk.watched == {"demo"}
        await pilot.press("x")  # stop demo
        await settle(pilot)
        await until(pilot, lambda: world.egress.streams[0].closed, what="the watch lets go of the proxy")
        assert dashboard._desk.watched == frozenset()
        await until(pilot, lambda: not [t for t in threading.enumerate() if t.name == "approvals of demo"],
                    what="the watch's thread ends")

    world.run(scenario)


def test_a_prompt_over_a_running_operation_stays_until_answered(world: TuiWorld) -> None:
    """The operation finishing underneath must not take the prompt away with it."""
    world.make("demo")
    world.make("idle", running=False)
    world.guest.hold = threading.Event()

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("down")
        await settle(pilot)
        await pilot.press("s")  # start idle: it waits for SSH
        await until(pilot, world.guest.waiting.is_set, what="the start waits for SSH")
        assert isinstance(pilot.app.screen, ProgressScreen)
        world.egress.hold("demo", host="pypi.org")
        screen = await prompt(pilot, busy=True)
        world.guest.hold.set()  # the start finishes under the prompt
        await until(pilot, lambda: world.state("idle") is not None and "started" in world.events("idle"),
                    what="the start is done")
        await settle(pilot)
        assert pilot.app.screen is screen
        await pilot.press("d")
        await answered(pilot, world, 1)
        # Then the progress screen leaves with its result, as it would have.
        await until(pilot, lambda: isinstance(pilot.app.screen, DashboardScreen), what="back on the dashboard")
        await settle(pilot)
        shown = [n.message for n in pilot.app._notifications]
        assert any(m.startswith("idle started in") for m in shown)  # its result was handled
        assert "demo → pypi.org:443: denied" in shown

    world.run(scenario)


def test_a_workspace_stopped_while_its_prompt_is_open_says_so(world: TuiWorld) -> None:
    world.make("demo")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        world.egress.hold("demo", host="pypi.org")
        await prompt(pilot)
        world.services.workspaces.stop(name="demo", force=True, on_progress=ignore_progress, cancel=CancelToken())
        pilot.app.screen_stack[0].reload()  # the dashboard notices
        await settle(pilot)
        await pilot.press("o")
        await settle(pilot)
        assert status(pilot) == "demo → pypi.org:443: demo stopped meanwhile; the proxy denied it"
        assert world.egress.answers == []

    world.run(scenario)
