"""Cold boot against reset, in one run: a fresh workspace's create (boot → SSH → cloud-init)
against reset → SSH-ready with the clean state verified, in place and then with standby
(a swap to the paused clean copy); at least 5 resets each; medians and ratios.

A standby reset is timed to the workspace being back (the outcome's duration, then the
verifying command); the whole call, which then removes the old guest and prepares the next
copy, is printed beside it.

Usage (root, libvirtd running): .venv/bin/python bench/reset.py [--resets 5] [--boots 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from itertools import pairwise

from _env import bench_services

from agentbox.model.progress import CancelToken, Progress
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.services.snapshots import RestorePath

CANARY = "/home/agent/bench-canary"


def run(services, name: str, *argv: str) -> str:  # type: ignore[no-untyped-def]
    out = bytearray()
    result = services.workspaces.exec(name=name, argv=list(argv), stdout=out.extend, stderr=lambda _: None)
    if result.exit_code != 0:
        raise SystemExit(f"`{' '.join(argv)}` failed in {name} with {result.exit_code}")
    return out.decode()


def resets(services, name: str, count: int, path: RestorePath,  # type: ignore[no-untyped-def]
           ) -> tuple[list[float], list[float], dict[str, list[float]]]:
    """(to the workspace back and verified, the whole reset call, seconds per step)."""
    back: list[float] = []
    whole: list[float] = []
    steps: dict[str, list[float]] = {}
    for _ in range(count):
        run(services, name, "sh", "-c", f"echo dirty > {CANARY} && sync")
        marks: list[tuple[str, float]] = []

        def mark(progress: Progress, marks: list[tuple[str, float]] = marks) -> None:
            marks.append((progress.step, time.monotonic()))

        started = time.monotonic()
        outcome = services.snapshots.reset(name=name, on_progress=mark, cancel=CancelToken())
        called = time.monotonic() - started
        verify_started = time.monotonic()
        state = run(services, name, "sh", "-c", f"test -e {CANARY} && echo dirty || echo clean")
        verify = time.monotonic() - verify_started
        if outcome.path is not path:
            raise SystemExit(f"expected a {path.value} reset, got {outcome.path.value} ({outcome.reason})")
        if state.strip() != "clean":
            raise SystemExit("the canary survived a reset: the clean state was NOT restored")
        back.append(outcome.duration_s + verify)
        whole.append(called)
        marks.append(("end", started + called))
        for (step, at), (_, next_at) in pairwise(marks):
            steps.setdefault(step, []).append(next_at - at)
    return back, whole, steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--template", default="debian-12")
    parser.add_argument("--resets", type=int, default=5)
    parser.add_argument("--boots", type=int, default=1, help="cold boots (fresh workspaces) to measure")
    args = parser.parse_args()
    boots: list[float] = []
    with bench_services(template=args.template) as (services, ctx):
        for index in range(args.boots):
            started = time.monotonic()
            create_workspace(ctx=ctx, request=CreateRequest(name=f"boot{index}", template=args.template, warm=False),
                             on_progress=lambda _: None, cancel=CancelToken())
            boots.append(time.monotonic() - started)
        in_place, in_place_whole, in_place_steps = resets(services, "boot0", args.resets, RestorePath.SNAPSHOT)
        started = time.monotonic()
        services.standby.set(name="boot0", on=True, on_progress=lambda _: None, cancel=CancelToken())
        standby_on = time.monotonic() - started
        swapped, swapped_whole, swapped_steps = resets(services, "boot0", args.resets, RestorePath.STANDBY)
        accel = ctx.backend.capabilities.accel

    boot = statistics.median(boots)
    print(f"accel {accel}; {len(boots)} cold boot(s), {len(in_place)} in-place and {len(swapped)} standby resets "
          "(clean state verified each time)")
    print(f"{'':<44}{'median s':>10}{'min s':>8}{'max s':>8}")
    print(f"{'cold boot to SSH-ready + cloud-init':<44}{boot:>10.2f}{min(boots):>8.2f}{max(boots):>8.2f}")
    for label, figures in (("reset in place, back and verified", in_place),
                           ("reset in place, whole call", in_place_whole),
                           ("standby reset (swap), back and verified", swapped),
                           ("standby reset, whole call (+ next copy)", swapped_whole)):
        print(f"{label:<44}{statistics.median(figures):>10.2f}{min(figures):>8.2f}{max(figures):>8.2f}")
    for title, steps in (("in place", in_place_steps), ("standby", swapped_steps)):
        print(f"  {title} steps: " + ", ".join(f"{step} {statistics.median(s):.2f}" for step, s in steps.items()))
    print(f"standby on (a reset, the clean export and the first copy): {standby_on:.2f} s")
    print(f"reset in place / cold boot = {statistics.median(in_place) / boot:.3f} (goal <= 0.050)")
    print(f"standby reset / cold boot = {statistics.median(swapped) / boot:.3f} (goal <= 0.020)")


if __name__ == "__main__":
    main()
