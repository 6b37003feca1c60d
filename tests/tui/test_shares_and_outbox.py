"""Shares (folders picked in a directory tree, shared read-only, removed) and the outbox
(listed, exported to a folder the user picks or types, cleared after a confirm)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from textual.widgets import Button, DataTable, Input, Select, Static

from agentbox.model.progress import CancelToken, ignore_progress
from agentbox.model.shares import ShareMechanism
from agentbox.tui.dialogs import ConfirmScreen, ErrorScreen
from agentbox.tui.operations import add_share
from agentbox.tui.outbox_screen import ExportScreen, OutboxScreen
from agentbox.tui.shares_screen import AddShareScreen, SharesScreen
from agentbox.tui.widgets import FolderTree

from .conftest import TuiWorld, screen_text, settle, until
from .test_actions import status


async def open_add_share(pilot) -> AddShareScreen:  # type: ignore[no-untyped-def]
    await pilot.press("f")
    await settle(pilot)
    assert isinstance(pilot.app.screen, SharesScreen)
    assert "No shared folders yet: press a to share one, read-only." in screen_text(pilot)
    await pilot.press("a")
    await settle(pilot)
    dialog = pilot.app.screen
    assert isinstance(dialog, AddShareScreen)
    tree = dialog.query_one(FolderTree)
    await until(pilot, lambda: len(tree.root.children) == 2, what="the home folder is listed")
    return dialog


def shown(pilot, selector: str) -> str:  # type: ignore[no-untyped-def]
    """What a text widget of the active screen shows (for text too long for one line)."""
    return str(pilot.app.screen.query_one(selector, Static).content)


def shares_file(world: TuiWorld) -> list[dict[str, str]]:
    return json.loads(world.ctx.records.files(name="demo").shares.read_text())


def test_a_folder_picked_in_the_tree_is_shared_read_only_then_removed(world: TuiWorld) -> None:
    world.make("demo")
    domain = world.domain("demo")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        dialog = await open_add_share(pilot)
        tree = dialog.query_one(FolderTree)
        assert [str(n.label) for n in tree.root.children] == ["notes", "projects"]  # folders only, none hidden
        await pilot.press("down", "down", "enter")  # projects, opened
        projects = tree.root.children[1]
        await until(pilot, lambda: len(projects.children) == 2, what="projects is opened")
        await pilot.press("down")  # alpha: the highlighted folder fills the path, the tag follows
        alpha = world.home / "projects" / "alpha"
        assert dialog.query_one("#share-folder-path", Input).value == str(alpha)
        assert dialog.query_one("#tag", Input).value == "alpha"
        dialog.query_one("#mechanism", Select).value = "copy-disk"
        await pilot.pause()
        assert shown(pilot, "#mechanism-about") == ("copy-disk: a copy made now, on a disk QEMU attaches read-only "
                                                    "(not live); a copy made now: later changes on the host do "
                                                    "not show")
        await pilot.click("#share")
        await settle(pilot)
        assert isinstance(pilot.app.screen, SharesScreen)
        assert [(s["tag"], s["source"], s["mechanism"]) for s in shares_file(world)] == [
            ("alpha", str(alpha), "copy-disk")]
        assert world.backend.attached(name=domain)[1]  # a read-only disk is attached to the running VM
        assert world.events("demo")[-1] == "share.added"
        assert status(pilot) == (f"{alpha} is shared read-only at /mnt/shares/alpha in demo (copy-disk: a copy made "
                                 "now: later changes on the host do not show)")
        table = pilot.app.screen.query_one("#shares", DataTable)
        row = [str(c) for c in table.get_row_at(0)]
        assert row[:6] == ["alpha", "~/projects/alpha", "/mnt/shares/alpha", "copy-disk", "copy", "yes"]
        assert row[6].startswith("✓ write refused ") and row[7] == "none found"

        await pilot.press("d")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ConfirmScreen)
        assert "Stop sharing alpha with demo?" in screen_text(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert shares_file(world) == [] and not world.backend.attached(name=domain)[1]
        assert world.events("demo")[-1] == "share.removed"
        assert (alpha / "readme.md").read_text() == "hello from alpha\n"  # the folder itself is untouched
        await pilot.press("escape")
        await settle(pilot)
        assert "none (f to share a folder read-only)" in screen_text(pilot)  # the dashboard reloaded

    world.run(scenario)


def test_automatic_says_which_mechanism_it_picks_and_whether_it_is_live(world: TuiWorld) -> None:
    world.make("demo")
    best = next(c for c in world.services.shares.mechanisms() if c.available)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        dialog = await open_add_share(pilot)
        assert dialog.query_one("#mechanism", Select).value == "auto"
        assert f"automatic: {best.mechanism.value}" in screen_text(pilot)
        assert shown(pilot, "#mechanism-about").endswith(
            "live: changes on the host show in the workspace" if best.mechanism.live
            else "a copy made now: later changes on the host do not show")
        dialog.query_one("#share-folder-path", Input).value = str(world.home / "notes")
        await until(pilot, lambda: dialog.query_one("#tag", Input).value == "notes", what="the tag follows")
        dialog.query_one("#tag", Input).value = "my-notes"  # typed over: it no longer follows the folder
        await pilot.click("#share")
        await settle(pilot)
        assert [(s["tag"], s["mechanism"]) for s in shares_file(world)] == [("my-notes", best.mechanism.value)]
        kind = "live" if best.mechanism.live else "a copy made now"
        assert f"({best.mechanism.value}: {kind}" in status(pilot)
        await pilot.press("d", "y")  # leave no share (a bind mount, maybe) behind
        await settle(pilot)
        assert shares_file(world) == []

    world.run(scenario)


def test_a_folder_the_service_refuses_is_explained_in_the_dialog(world: TuiWorld) -> None:
    world.make("demo")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        dialog = await open_add_share(pilot)
        path, tag = dialog.query_one("#share-folder-path", Input), dialog.query_one("#tag", Input)
        path.value = str(world.home)
        await until(pilot, lambda: tag.value == "home", what="the tag follows the folder")
        await pilot.click("#share")
        await settle(pilot)
        assert pilot.app.screen is dialog
        assert shown(pilot, "#share-problem") == (f"✗ refusing to share your whole home folder {world.home}\n"
                                                  "What to do: share only the project folder the agent needs")
        assert "✗ refusing to share your whole home folder" in screen_text(pilot)
        path.value = str(world.home / ".ssh")
        await until(pilot, lambda: tag.value == "ssh", what="the tag follows the folder")
        path.focus()
        await pilot.press("enter")  # Enter in the path submits too (a second click would land in the
        await settle(pilot)         # button's 0.2 s press animation, which ignores clicks)
        assert "where credentials live" in shown(pilot, "#share-problem")
        tag.value = "Bad Tag"
        await until(pilot, lambda: "✗ invalid share tag 'Bad Tag'" in shown(pilot, "#tag-problem"),
                    what="the tag is checked as it changes")
        assert "where credentials live" in shown(pilot, "#share-problem")  # the folder's refusal stays
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(pilot.app.screen, SharesScreen)
        assert not world.ctx.records.files(name="demo").shares.exists() or shares_file(world) == []

    world.run(scenario)


def fill_outbox(world: TuiWorld) -> Path:
    outbox = world.services.outbox.directory(name="demo")
    outbox.mkdir(exist_ok=True)
    (outbox / "report.md").write_text("all done\n")
    (outbox / "data").mkdir()
    (outbox / "data" / "table.csv").write_text("a,b\n1,2\n")
    os.symlink("/etc/passwd", outbox / "sneaky")  # the guest may leave anything: never followed
    return outbox


def test_the_outbox_is_listed_exported_and_cleared(world: TuiWorld) -> None:
    world.make("demo")
    outbox = fill_outbox(world)
    dest = world.home / "demo-outbox"

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        assert re.search(r"Outbox +2 file\(s\), 17 B \+ 1 not exportable", screen_text(pilot))
        await pilot.press("b")
        await settle(pilot)
        screen = pilot.app.screen
        assert isinstance(screen, OutboxScreen)
        table = screen.query_one("#outbox", DataTable)
        assert [[str(c) for c in table.get_row_at(i)][:3] for i in range(table.row_count)] == [
            ["data", "dir", ""], ["data/table.csv", "file", "8 B"], ["report.md", "file", "9 B"],
            ["sneaky", "symlink", ""]]
        # The limit is a real loop-mounted filesystem here (the tests run as root).
        assert re.search(r"Used \d+\.\d KiB of 1\.0 GiB \(0%\), a limit enforced on the host\.",
                         str(screen.query_one("#outbox-usage", Static).content))

        await pilot.press("e")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ExportScreen)
        assert pilot.app.screen.query_one("#export-folder-path", Input).value == str(dest)  # a suggestion
        await pilot.press("enter")
        await settle(pilot)
        assert (dest / "report.md").read_text() == "all done\n"
        assert (dest / "data" / "table.csv").read_text() == "a,b\n1,2\n"
        assert not (dest / "sneaky").exists()
        assert status(pilot) == (f"exported 2 file(s), 17 bytes, to {dest}; 1 skipped"
                                 " (only new regular files are exported)")
        assert world.audit("demo")[-1]["event"] == "outbox.exported"

        await pilot.press("c")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ConfirmScreen)
        assert "Empty the outbox of demo?" in screen_text(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert list(outbox.iterdir()) == []
        assert world.audit("demo")[-1]["event"] == "outbox.cleared"
        assert "The outbox is empty: the agent writes its results to /mnt/outbox." in screen_text(pilot)
        assert screen.query_one("#clear", Button).disabled and screen.query_one("#export", Button).disabled
        await pilot.press("c")  # nothing left to clear: no question asked
        await settle(pilot)
        assert pilot.app.screen is screen

    world.run(scenario)


def test_export_to_a_typed_path_that_is_a_file_explains_itself(world: TuiWorld) -> None:
    world.make("demo")
    fill_outbox(world)
    (world.home / "taken").write_text("not a folder\n")

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("b")
        await settle(pilot)
        await pilot.press("e")
        await settle(pilot)
        pilot.app.screen.query_one("#export-folder-path", Input).value = str(world.home / "taken")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ErrorScreen)
        assert shown(pilot, "#error-message") == f"{world.home / 'taken'} exists and is not a folder"
        assert "What to do: export into a new or empty folder" in screen_text(pilot)

    world.run(scenario)


def test_the_export_folder_can_be_picked_in_the_tree(world: TuiWorld) -> None:
    world.make("demo")
    fill_outbox(world)

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("b")
        await settle(pilot)
        await pilot.press("e")
        await settle(pilot)
        tree = pilot.app.screen.query_one(FolderTree)
        await until(pilot, lambda: len(tree.root.children) == 2, what="the home folder is listed")
        tree.focus()
        await pilot.press("down")  # notes
        assert pilot.app.screen.query_one("#export-folder-path", Input).value == str(world.home / "notes")
        await pilot.click("#export")
        await settle(pilot)
        assert (world.home / "notes" / "report.md").read_text() == "all done\n"

    world.run(scenario)


def test_shares_mechanisms_enum_matches_the_dialog_options(world: TuiWorld) -> None:
    """Every mechanism this host offers is a choice in the dialog, after automatic."""
    world.make("demo")
    offered = [c.mechanism.value for c in world.services.shares.mechanisms() if c.available]

    async def scenario(pilot) -> None:  # type: ignore[no-untyped-def]
        dialog = await open_add_share(pilot)
        select = dialog.query_one("#mechanism", Select)
        values = [value for _, value in select._options if isinstance(value, str)]
        assert values == ["auto", *offered]
        assert set(offered) <= {m.value for m in ShareMechanism}

    world.run(scenario)


def test_sharing_says_what_the_guest_cannot_read(world: TuiWorld) -> None:
    world.make("demo")
    alpha = world.home / "projects" / "alpha"
    os.mkfifo(alpha / "pipe")
    message = add_share(services=world.services, name="demo", source=str(alpha), tag=None,
                        mechanism="copy-disk").run(ignore_progress, CancelToken())
    assert message.startswith(f"{alpha} is shared read-only at /mnt/shares/alpha in demo (copy-disk")
    assert "But 1 item(s) cannot be read in the guest (pipe: a socket, FIFO or device: not shared)" in message
    assert "left out of the copy" in message
