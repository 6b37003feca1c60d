"""The TUI driven with Pilot against the session's real workspace: a reset and a network
switch from the keyboard, and an approval prompt for a connection the real egress proxy
holds, answered from the TUI."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from textual.pilot import Pilot
from textual.widgets import DataTable

from agentbox.audit import AuditRecord, read_records
from agentbox.model.network import NetworkMode
from agentbox.tui.app import AgentboxApp
from agentbox.tui.approval_screen import ApprovalScreen
from agentbox.tui.dashboard import DashboardScreen
from agentbox.tui.dialogs import ConfirmScreen
from agentbox.tui.terminal import TuiOptions
from tests.tui.conftest import RecordingTerminal, screen_text, settle

from .conftest import VmEnv, run_in

OPTIONS = TuiOptions(refresh_s=3600, follow_poll_s=0.1)  # reloads come from the actions themselves
WAIT_S = 120.0  # generous: TCG guests are slow, and the machine is shared with other VM tests


def drive(env: VmEnv, scenario: Callable[[Pilot[Any]], Awaitable[None]]) -> None:
    app = AgentboxApp(services=env.services(), options=OPTIONS, terminal=RecordingTerminal())

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await scenario(pilot)

    asyncio.run(main())


async def wait_for(pilot: Pilot[Any], condition: Callable[[], bool], *, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened within {WAIT_S:.0f} s: {what}\n{screen_text(pilot)}")
        await pilot.pause(0.1)


async def select(pilot: Pilot[Any], name: str) -> None:
    """Put the cursor on `name` (other modules of the session may have made more workspaces)."""
    table = pilot.app.screen.query_one("#workspaces", DataTable)
    names = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
    table.move_cursor(row=names.index(name))
    await settle(pilot)
    assert re.search(rf"▏ {name} +●", screen_text(pilot)), "its details are shown"


def resets(env: VmEnv, name: str) -> int:
    return sum(r.event == "reset" for r in _records(env, name))


def _records(env: VmEnv, name: str) -> list[AuditRecord]:
    return list(read_records(path=env.paths.audit_log(name)))


def test_reset_from_the_tui_reverts_the_guest(vm_env: VmEnv, clean_workspace: str) -> None:
    name = clean_workspace
    assert run_in(vm_env, name, "sh", "-c", "echo dirty > ~/tui-canary && sync")[0] == 0
    before = resets(vm_env, name)

    async def scenario(pilot: Pilot[Any]) -> None:
        await select(pilot, name)
        await pilot.press("r")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ConfirmScreen)
        assert f"{name} goes back to its clean state" in screen_text(pilot)
        await pilot.press("y")
        await settle(pilot)  # the reset runs on its progress screen until it is done
        assert isinstance(pilot.app.screen, DashboardScreen)
        status = str(pilot.app.screen.query_one("#status").content)
        assert re.fullmatch(rf"{name} back to its clean state in \d+\.\d s, (from the snapshot|by a cold boot .*)",
                            status), status

    drive(vm_env, scenario)
    assert resets(vm_env, name) == before + 1
    code, out, _ = run_in(vm_env, name, "sh", "-c", "cat ~/tui-canary 2>/dev/null || echo gone")
    assert (code, out) == (0, "gone\n")  # the guest answers, as it was before the canary


def test_a_network_switch_and_an_approval_from_the_tui(vm_env: VmEnv, clean_workspace: str) -> None:
    name = clean_workspace
    network = vm_env.services().network
    network.set_mode(name=name, mode="off")
    held: dict[str, Any] = {}

    def curl_unlisted() -> None:
        # The guest asks for a name on no allowlist: the proxy holds it (never looked up) for the TUI.
        held["result"] = run_in(vm_env, name, "curl", "-sS", "-m", "60", "-o", "/dev/null", "-w", "%{http_code}",
                                "http://approve-me.agentbox.test/")

    async def scenario(pilot: Pilot[Any]) -> None:
        await select(pilot, name)
        await pilot.press("w")  # the mode picker: 1 off, 2 allowlist, 3 learn, 4 open
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        assert network.policy(name=name).mode is NetworkMode.ALLOWLIST
        assert network.show(name=name).egress == "only the allowlist, through the egress proxy"  # the live proxy
        assert re.search(rf"{name} +● running +- +\S+ +☰ allowlist", screen_text(pilot))
        assert str(pilot.app.screen.query_one("#status").content) == (
            f"{name}: network allowlist (applies now, for the next connection)")

        worker = threading.Thread(target=curl_unlisted, daemon=True)
        worker.start()
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ApprovalScreen), what="the approval prompt")
        await settle(pilot)
        assert f"Allow {name} to connect to approve-me.agentbox.test:80?" in screen_text(pilot)
        await pilot.press("d")
        await wait_for(pilot, lambda: not worker.is_alive(), what="curl gets its answer")
        await wait_for(pilot, lambda: "denied" in str(pilot.app.screen.query_one("#status").content),
                       what="the TUI says the answer went through")

        await pilot.press("w", "4")  # open, then straight back to off
        await settle(pilot)
        assert network.policy(name=name).mode is NetworkMode.OPEN
        await pilot.press("w", "1")
        await settle(pilot)
        assert network.policy(name=name).mode is NetworkMode.OFF

    drive(vm_env, scenario)
    code, out, _ = held["result"]
    assert out == "403"  # refused by the proxy on the TUI's word
    [approval] = [r for r in _records(vm_env, name) if r.event == "network.approval"][-1:]
    assert (approval.details["host"], approval.details["verdict"], approval.details["applied"]) == (
        "approve-me.agentbox.test", "deny", True)
    [decision] = [r for r in network.records(name=name) if r.host == "approve-me.agentbox.test"][-1:]
    assert decision.decision.rule == "approval:denied"
    modes = [r.details["mode"] for r in _records(vm_env, name) if r.event == "network.policy"][-3:]
    assert modes == ["allowlist", "open", "off"]
