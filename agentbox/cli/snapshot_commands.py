"""reset, reclean, standby, checkpoint, checkpoints, restore: the workspace's saved states."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from agentbox import bootstrap
from agentbox.cli.output import confirmed, print_json, print_table
from agentbox.cli.progress import ProgressPrinter
from agentbox.model.progress import CancelToken
from agentbox.model.workspace import StandbyState
from agentbox.services.snapshots import RestoreOutcome, RestorePath


def add_snapshot_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    reset = sub.add_parser("reset", help="return a workspace to its clean state (disk and RAM) in seconds")
    reset.add_argument("name")
    reset.add_argument("--json", action="store_true")
    reset.set_defaults(handler=reset_workspace)

    reclean = sub.add_parser("reclean", help="make the current state the new clean state")
    reclean.add_argument("name")
    reclean.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    reclean.set_defaults(handler=reclean_workspace)

    standby = sub.add_parser("standby", help="keep a paused clean copy ready so resets are a swap to it "
                             "(on|off; without either: show it)")
    standby.add_argument("name")
    standby.add_argument("switch", nargs="?", choices=("on", "off"),
                         help="on: costs one more guest's RAM, and resets a running workspace once now")
    standby.set_defaults(handler=standby_workspace)

    checkpoint = sub.add_parser("checkpoint", help="save a named checkpoint (or --delete one)")
    checkpoint.add_argument("name")
    checkpoint.add_argument("label")
    checkpoint.add_argument("--delete", action="store_true", help="delete the checkpoint instead")
    checkpoint.set_defaults(handler=checkpoint_workspace)

    checkpoints = sub.add_parser("checkpoints", help="list a workspace's checkpoints")
    checkpoints.add_argument("name")
    checkpoints.add_argument("--json", action="store_true")
    checkpoints.set_defaults(handler=list_checkpoints)

    restore = sub.add_parser("restore", help="return a workspace to a named checkpoint")
    restore.add_argument("name")
    restore.add_argument("label")
    restore.add_argument("--json", action="store_true")
    restore.set_defaults(handler=restore_workspace)


def describe_outcome(outcome: RestoreOutcome) -> str:
    how = {RestorePath.SNAPSHOT: "reverted to the saved disk and RAM",
           RestorePath.STANDBY: "swapped to the clean copy standing by",
           RestorePath.COLD_BOOT: "recreated the disk and cold booted"}[outcome.path]
    if outcome.reason:
        how += f" ({outcome.reason})"
    state = "running" if outcome.running else "stopped, as it was when saved"
    return f"{outcome.name} is back to {outcome.target} in {outcome.duration_s:.1f} s: {how}; {state}"


def _print_outcome(outcome: RestoreOutcome, *, as_json: bool) -> None:
    if as_json:
        print_json(asdict(outcome))
    else:
        print(describe_outcome(outcome))


def reset_workspace(args: argparse.Namespace) -> int:
    outcome = bootstrap.build_services().snapshots.reset(name=args.name, on_progress=ProgressPrinter(),
                                                         cancel=CancelToken())
    _print_outcome(outcome, as_json=args.json)
    return 0


def standby_workspace(args: argparse.Namespace) -> int:
    services = bootstrap.build_services()
    if args.switch is not None:
        services.standby.set(name=args.name, on=args.switch == "on", on_progress=ProgressPrinter(),
                             cancel=CancelToken())
    state = services.workspaces.get(name=args.name).standby
    print({StandbyState.OFF: f"standby of {args.name} is off: resets revert in place",
           StandbyState.READY: f"standby of {args.name} is on: a paused clean copy is ready for the next reset",
           StandbyState.WAITING: f"standby of {args.name} is on: its copy is made at the next reset (or start)",
           }[state])
    return 0


def reclean_workspace(args: argparse.Namespace) -> int:
    services = bootstrap.build_services()
    services.workspaces.get(name=args.name)  # NotFound before asking anything
    if not args.yes and not confirmed(
            question=f"Every reset of {args.name!r} will return to its state as it is NOW. Continue? [y/N] ",
            expected=("y", "yes"), what=f"replacing the clean state of {args.name!r}",
            hint=f"agentbox reclean {args.name} --yes"):
        print("clean state unchanged")
        return 1
    record = services.snapshots.reclean(name=args.name, on_progress=ProgressPrinter())
    if record.clean_snapshot:
        print(f"the current state of {args.name} is now its clean state ({record.clean_snapshot})")
    else:
        print(f"no RAM snapshot possible ({record.clean_fallback})")
    return 0


def checkpoint_workspace(args: argparse.Namespace) -> int:
    snapshots = bootstrap.build_services().snapshots
    if args.delete:
        snapshots.delete_checkpoint(name=args.name, label=args.label)
        print(f"checkpoint {args.label} of {args.name} deleted")
        return 0
    checkpoint = snapshots.checkpoint(name=args.name, label=args.label)
    kind = "disk and RAM" if checkpoint.with_memory else "disk only (the workspace was stopped)"
    print(f"checkpoint {checkpoint.label} of {args.name} saved: {kind}; agentbox restore {args.name} {args.label}")
    return 0


def list_checkpoints(args: argparse.Namespace) -> int:
    checkpoints = bootstrap.build_services().snapshots.checkpoints(name=args.name)
    if args.json:
        print_json([asdict(c) for c in checkpoints])
    elif not checkpoints:
        print(f"{args.name} has no checkpoints: agentbox checkpoint {args.name} LABEL")
    else:
        print_table(("LABEL", "CREATED", "SAVED"),
                    [(c.label, c.created, "disk+RAM" if c.with_memory else "disk") for c in checkpoints])
    return 0


def restore_workspace(args: argparse.Namespace) -> int:
    outcome = bootstrap.build_services().snapshots.restore(name=args.name, label=args.label,
                                                           on_progress=ProgressPrinter(), cancel=CancelToken())
    _print_outcome(outcome, as_json=args.json)
    return 0
