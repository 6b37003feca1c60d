"""Outbox export and clearing against a guest that changes the outbox while the host walks
it: whatever it swaps, and whenever, no host-only file ends up in the export or is deleted,
and nothing is written through a link in the destination."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from agentbox.model.progress import CancelToken
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.services.outbox import OutboxService

from .conftest import World

HOST_SECRET = "host-only secret\n"


@pytest.fixture()
def outbox(world: World) -> OutboxService:
    create_workspace(ctx=world.ctx, request=CreateRequest(name="ws"), on_progress=world.progress.append,
                     cancel=CancelToken())
    return OutboxService(ctx=world.ctx)


@pytest.fixture()
def host_only(tmp_path: Path) -> Path:
    folder = tmp_path / "host-only"
    folder.mkdir()
    (folder / "secret.txt").write_text(HOST_SECRET)
    return folder


def guest_swaps_when_host_opens(monkeypatch: pytest.MonkeyPatch, *, when: Callable[[str], bool],
                                box: Path, host_only: Path) -> list[str]:
    """The guest's move, timed exactly: the first time the host opens a path that `when`
    picks, the guest moves the outbox's folder zz aside and puts a link to a host folder in
    its place, just before the host's open goes through."""
    real_open, swapped = os.open, []

    def open_then_swap(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if not swapped and when(os.fspath(path)):  # type: ignore[arg-type]
            (box / "zz").rename(box / "zz-moved")
            (box / "zz").symlink_to(host_only)
            swapped.append(os.fspath(path))  # type: ignore[arg-type]
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", open_then_swap)
    return swapped


def exported_text(dest: Path) -> list[str]:
    return [p.read_text() for p in dest.rglob("*") if p.is_file() and not p.is_symlink()]


def fill(box: Path) -> None:
    (box / "a.txt").write_text("first\n")
    (box / "zz").mkdir()
    (box / "zz" / "secret.txt").write_text("the agent's own\n")


def test_a_folder_swapped_for_a_link_after_it_was_listed_is_not_followed(
        outbox: OutboxService, host_only: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    box = outbox.directory(name="ws")
    fill(box)
    # The host has seen zz as a folder; the swap comes as it first opens zz or anything in it.
    swapped = guest_swaps_when_host_opens(monkeypatch, box=box, host_only=host_only,
                                          when=lambda path: "zz" in Path(path).parts)
    result = outbox.export(name="ws", dest=tmp_path / "out")
    assert swapped
    assert HOST_SECRET not in exported_text(tmp_path / "out")
    assert "zz/secret.txt" not in result.copied and "a.txt" in result.copied
    assert not (tmp_path / "out" / "zz" / "secret.txt").exists()
    assert (host_only / "secret.txt").read_text() == HOST_SECRET


def test_a_folder_swapped_while_its_files_are_copied_still_yields_only_its_own_files(
        outbox: OutboxService, host_only: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    box = outbox.directory(name="ws")
    fill(box)
    # The host is inside zz already, about to open zz/secret.txt, when zz becomes a link.
    swapped = guest_swaps_when_host_opens(monkeypatch, box=box, host_only=host_only,
                                          when=lambda path: Path(path).name == "secret.txt")
    result = outbox.export(name="ws", dest=tmp_path / "out")
    assert swapped
    assert HOST_SECRET not in exported_text(tmp_path / "out")
    # The folder the host had opened is the one copied: the agent's file, from where it was moved.
    assert result.copied == ("a.txt", "zz/secret.txt")
    assert (tmp_path / "out" / "zz" / "secret.txt").read_text() == "the agent's own\n"


def test_export_never_writes_through_a_link_or_over_a_file_in_the_destination(
        outbox: OutboxService, tmp_path: Path) -> None:
    box = outbox.directory(name="ws")
    (box / "notes.txt").write_text("from the guest\n")
    (box / "keep.txt").write_text("from the guest\n")
    (box / "sub").mkdir()
    (box / "sub" / "authorized_keys").write_text("ssh-ed25519 AAAA guest\n")
    victim, victim_dir = tmp_path / "victim.txt", tmp_path / "victim-dir"
    victim.write_text("the user's\n")
    victim_dir.mkdir()
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "notes.txt").symlink_to(victim)
    (dest / "sub").symlink_to(victim_dir)
    (dest / "keep.txt").write_text("the user's\n")
    result = outbox.export(name="ws", dest=dest)
    assert victim.read_text() == "the user's\n"
    assert list(victim_dir.iterdir()) == []
    assert (dest / "keep.txt").read_text() == "the user's\n"
    assert result.copied == ()
    assert [path for path, _ in result.skipped] == ["keep.txt", "notes.txt", "sub"]


def test_clearing_never_deletes_through_a_folder_swapped_for_a_link(
        outbox: OutboxService, host_only: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    box = outbox.directory(name="ws")
    fill(box)
    real_unlink, swapped = os.unlink, []

    def unlink_after_swap(path: object, *args: object, **kwargs: object) -> None:
        # The host is about to delete zz/secret.txt when the guest makes zz a link to a host folder.
        if not swapped and Path(os.fspath(path)).name == "secret.txt":  # type: ignore[arg-type]
            (box / "zz").rename(box / "zz-moved")
            (box / "zz").symlink_to(host_only)
            swapped.append(True)
        real_unlink(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "unlink", unlink_after_swap)
    outbox.clear(name="ws")
    assert swapped
    assert (host_only / "secret.txt").read_text() == HOST_SECRET
    assert not (box / "zz").exists() and not (box / "a.txt").exists()
