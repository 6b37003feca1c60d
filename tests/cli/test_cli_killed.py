"""`agentbox create`, `reset`, `share add` and `destroy` SIGKILLed at every one of their steps
(each progress line, backend change, egress change, guest command and host mount), as real
CLI processes on a Fake-backend world they share through files (tests/cli/stored_world.py).
Afterwards `list` tells the truth (a half-made workspace is `broken`, with what to do), the next
command recovers or cleans up, and `destroy` leaves no domain, disk, seed, key, record, bind
mount or egress helper behind. Two commands at once on one workspace: the second is refused
as busy while the first works, never both. The same faults on real guests are in
tests/vm/test_killed_commands.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentbox.host import bind_mounts

from .stored_world import CliRun, pause_at, run_cli, running_egress, stored_domains

BUSY_EXIT = 6


@pytest.fixture(autouse=True)
def no_mounts_outlive_the_test(tmp_path: Path) -> Iterator[None]:
    yield  # a failed test may leave its bind mounts: they would keep pytest from removing tmp_path
    for mountpoint in bind_mounts.leftover_mounts(under=tmp_path, keep=()):
        bind_mounts.unmount(mountpoint)


def ok(run: CliRun) -> CliRun:
    assert run.code == 0, (run.code, run.err[-800:])
    return run


def listed(work: Path) -> dict[str, dict[str, object]]:
    run = ok(run_cli(work, "list", "--json"))
    return {w["name"]: w for w in json.loads(run.out)}


def shares(work: Path) -> dict[str, bool]:
    """Tag → attached, as `share list` says."""
    return {s["tag"]: s["attached"] for s in json.loads(ok(run_cli(work, "share", "list", "ws", "--json")).out)}


def leftovers(work: Path) -> list[str]:
    found = [f"domain {d}" for d in stored_domains(work)] + [f"egress of {n}" for n in running_egress(work)]
    storage = work / "storage" / "workspaces"
    found += [str(p) for p in storage.rglob("*")] if storage.exists() else []
    workspace = work / "root" / "data" / "workspaces" / "ws"
    found += [str(workspace)] if workspace.exists() else []
    return found + [f"mount {m}" for m in bind_mounts.leftover_mounts(under=work, keep=())]


def steps_of(work: Path, *argv: str) -> tuple[str, ...]:
    steps = ok(run_cli(work, *argv)).steps
    assert len(steps) >= 3, steps
    return steps


def killed(tmp_path: Path, label: str, step: int, argv: tuple[str, ...], *, prepare: tuple[str, ...] = ()) -> Path:
    """A fresh world (after `prepare`), where `argv` is killed at its `step`-th step."""
    work = tmp_path / label / str(step)
    if prepare:
        ok(run_cli(work, *prepare))
    paused = pause_at(work, step, *argv)
    at = paused.at
    run = paused.kill()
    assert run.code == -9 and "Traceback" not in run.err, (at, run.err)
    return work


def destroyed_leaves_nothing(work: Path, at: str) -> None:
    run = run_cli(work, "destroy", "ws", "--yes")
    assert run.code in (0, 4), (at, run.err)  # 4: there was nothing to destroy
    assert leftovers(work) == [], at
    assert listed(work) == {}, at


def test_create_killed_at_any_step_is_broken_with_a_hint_and_destroy_leaves_nothing(
        tmp_path: Path, project: Path) -> None:
    argv = ("create", "ws", "--share", f"{project}:code")
    steps = steps_of(tmp_path / "whole", *argv)
    for step, at in enumerate(steps, start=1):
        work = killed(tmp_path, "create", step, argv)
        workspaces = listed(work)
        if step == len(steps):  # killed as it printed "done": it was done
            assert workspaces["ws"]["state"] == "running", at
        elif workspaces:
            ws = workspaces["ws"]
            assert ws["state"] == "broken" and "agentbox destroy ws" in str(ws["problem"]), (at, ws)
            again = run_cli(work, *argv)
            assert again.code == 5 and "agentbox destroy ws" in again.err, (at, again.err)
        destroyed_leaves_nothing(work, at)
        ok(run_cli(work, *argv))  # the name is free again, the image still cached
        assert listed(work)["ws"]["state"] == "running" and shares(work) == {"code": True}, at


def test_reset_killed_at_any_step_is_recovered_by_the_next_reset(tmp_path: Path, project: Path) -> None:
    prepare = ("create", "ws", "--share", f"{project}:code")
    steps = steps_of(tmp_path / "whole", *prepare) and steps_of(tmp_path / "whole", "reset", "ws")
    for step, at in enumerate(steps, start=1):
        work = killed(tmp_path, "reset", step, ("reset", "ws"), prepare=prepare)
        assert listed(work)["ws"]["state"] in ("running", "stopped"), at  # what the VM is: never busy
        ok(run_cli(work, "reset", "ws"))
        assert listed(work)["ws"]["state"] == "running", at
        assert running_egress(work) == ["ws"] and shares(work) == {"code": True}, at
        destroyed_leaves_nothing(work, at)


def share_mounts(work: Path) -> list[Path]:
    """Host mounts other than the outbox's own (mounted for as long as the workspace lives)."""
    return [point for point in bind_mounts.leftover_mounts(under=work, keep=()) if point.name != "outbox"]


def test_share_add_killed_at_any_step_leaves_a_share_that_is_listed_or_gone(tmp_path: Path, project: Path) -> None:
    argv = ("share", "add", "ws", str(project), "--tag", "code")
    steps = steps_of(tmp_path / "whole", "create", "ws") and steps_of(tmp_path / "whole", *argv)
    for step, at in enumerate(steps, start=1):
        work = killed(tmp_path, "share", step, argv, prepare=("create", "ws"))
        if "code" not in shares(work):
            assert share_mounts(work) == [], at  # nothing half-made
        else:  # the next reset plugs it in like any other share
            ok(run_cli(work, "reset", "ws"))
            assert shares(work) == {"code": True}, at
            ok(run_cli(work, "share", "rm", "ws", "code"))
            assert share_mounts(work) == [], at
        ok(run_cli(work, *argv))
        assert shares(work) == {"code": True}, at
        destroyed_leaves_nothing(work, at)


def test_destroy_killed_at_any_step_is_finished_by_the_next_destroy(tmp_path: Path, project: Path) -> None:
    prepare = ("create", "ws", "--share", f"{project}:code")
    steps = steps_of(tmp_path / "whole", *prepare) and steps_of(tmp_path / "whole", "destroy", "ws", "--yes")
    for step, at in enumerate(steps, start=1):
        work = killed(tmp_path, "destroy", step, ("destroy", "ws", "--yes"), prepare=prepare)
        ws = listed(work)["ws"]
        assert ws["state"] in ("running", "stopped", "broken"), (at, ws)
        if ws["state"] == "broken":
            assert "agentbox destroy ws" in str(ws["problem"]), (at, ws)
        destroyed_leaves_nothing(work, at)


@pytest.mark.parametrize("second", [("reset", "ws"), ("destroy", "ws", "--yes"), ("share", "rm", "ws", "code")])
def test_a_second_command_while_a_reset_works_is_refused_as_busy(
        tmp_path: Path, project: Path, second: tuple[str, ...]) -> None:
    ok(run_cli(tmp_path, "create", "ws", "--share", f"{project}:code"))
    first = pause_at(tmp_path, 4, "reset", "ws")  # between the power-off and the revert
    assert first.at == "progress revert"
    refused = run_cli(tmp_path, *second)
    assert refused.code == BUSY_EXIT and "is busy" in refused.err and refused.steps == ()
    assert listed(tmp_path)["ws"]["state"] == "stopped"  # what it is right now
    ok(first.resume())
    assert listed(tmp_path)["ws"]["state"] == "running" and shares(tmp_path) == {"code": True}

