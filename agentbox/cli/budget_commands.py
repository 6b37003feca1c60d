"""`agentbox budget NAME [--egress SIZE] [--disk-writes SIZE] [--cpu DURATION] [--on-exceeded
end|pause] [--resume]`: show a workspace's per-session host budgets and the session's use, or
set them; `--resume` (after any change in the same command) lets a guest its budget paused run."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from agentbox import bootstrap
from agentbox.cli.output import print_json
from agentbox.model.budget import HostBudget, OnExceeded, format_amount, parse_seconds, parse_size


def add_budget_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    budget = sub.add_parser("budget", help="per-session budgets (egress bytes, disk writes, CPU time): show or set")
    budget.add_argument("name")
    budget.add_argument("--egress", metavar="SIZE", help="through the egress proxy, both ways (100M, 2G; 0: none)")
    budget.add_argument("--disk-writes", metavar="SIZE", help="bytes the guest writes to its disks (0: none)")
    budget.add_argument("--cpu", metavar="DURATION", help="the guest's CPU time (600, 10m, 2h; 0: none)")
    budget.add_argument("--on-exceeded", choices=[mode.value for mode in OnExceeded],
                        help="end: receipt, then reset as the policy says; pause: pause the guest, keep the session")
    budget.add_argument("--resume", action="store_true",
                        help="resume a guest its budget paused (refused while a budget is still exceeded)")
    budget.add_argument("--json", action="store_true")
    budget.set_defaults(handler=budget_command)


def budget_command(args: argparse.Namespace) -> int:
    services = bootstrap.build_services().budgets
    egress, disk = _size(args.egress, "--egress"), _size(args.disk_writes, "--disk-writes")
    cpu = None if args.cpu is None else parse_seconds(text=args.cpu, what="--cpu")
    on_exceeded = None if args.on_exceeded is None else OnExceeded(args.on_exceeded)
    changes = any(value is not None for value in (egress, disk, cpu, on_exceeded))
    if changes:
        new = services.set(name=args.name, egress_bytes=egress, disk_write_bytes=disk, cpu_seconds=cpu,
                           on_exceeded=on_exceeded)
        if not args.json:
            print(f"budgets of {args.name}: {_limits(new)} (an open session has them now)")
    if args.resume:
        resumed = services.resume(name=args.name)
        if not args.json:
            print(f"{args.name} resumed: its {resumed.paused_by} budget had paused it; the session goes on")
    status = services.status(name=args.name)
    if args.json:
        print_json(asdict(status))
        return 0
    if not changes and not args.resume:
        print(f"budgets of {args.name}: {_limits(status.budget)}")
    if status.paused_by:
        print(f"  paused by its {status.paused_by} budget: agentbox budget {args.name} --resume")
    if status.session:
        for line in status.lines:
            print(f"  session {status.session}: {line.describe()}")
    elif not changes and not args.resume:
        print("  no session open: a session's use is counted from `agentbox session start`")
    if status.unmeasured:
        print(f"  note: {status.unmeasured}")
    return 0


def _size(text: str | None, what: str) -> int | None:
    return None if text is None else parse_size(text=text, what=what)


def _limits(budget: HostBudget) -> str:
    parts = [f"{name} {format_amount(name, getattr(budget, name)) if getattr(budget, name) else 'none'}"
             for name in ("egress_bytes", "disk_write_bytes", "cpu_seconds")]
    return ", ".join(parts) + f"; on exceeded: {budget.on_exceeded.value}"
