"""Cold boot against reset, in one run: a fresh workspace's create (boot → SSH → cloud-init)
against reset → SSH-ready with the clean state verified, at least 5 resets; medians and
the ratio.

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

CANARY = "/home/agent/bench-canary"


def run(services, name: str, *argv: str) -> str:  # type: ignore[no-untyped-def]
    out = bytearray()
    result = services.workspaces.exec(name=name, argv=list(argv), stdout=out.extend, stderr=lambda _: None)
    if result.exit_code != 0:
        raise SystemExit(f"`{' '.join(argv)}` failed in {name} with {result.exit_code}")
    return out.decode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--template", default="debian-12")
    parser.add_argument("--resets", type=int, default=5)
    parser.add_argument("--boots", type=int, default=1, help="cold boots (fresh workspaces) to measure")
    args = parser.parse_args()
    boots: list[float] = []
    resets: list[float] = []
    steps: dict[str, list[float]] = {}
    with bench_services(template=args.template) as (services, ctx):
        for index in range(args.boots):
            started = time.monotonic()
            create_workspace(ctx=ctx, request=CreateRequest(name=f"boot{index}", template=args.template),
                             on_progress=lambda _: None, cancel=CancelToken())
            boots.append(time.monotonic() - started)
        for _ in range(args.resets):
            run(services, "boot0", "sh", "-c", f"echo dirty > {CANARY} && sync")
            marks: list[tuple[str, float]] = []

            def mark(progress: Progress, marks: list[tuple[str, float]] = marks) -> None:
                marks.append((progress.step, time.monotonic()))

            started = time.monotonic()
            services.snapshots.reset(name="boot0", on_progress=mark, cancel=CancelToken())
            marks.append(("verify", time.monotonic()))
            state = run(services, "boot0", "sh", "-c", f"test -e {CANARY} && echo dirty || echo clean")
            resets.append(time.monotonic() - started)
            marks.append(("end", time.monotonic()))
            for (step, at), (_, next_at) in pairwise(marks):
                steps.setdefault(step, []).append(next_at - at)
            if state.strip() != "clean":
                raise SystemExit("the canary survived a reset: the clean state was NOT restored")
        accel = ctx.backend.capabilities.accel

    boot, reset = statistics.median(boots), statistics.median(resets)
    print(f"accel {accel}; {len(boots)} cold boot(s), {len(resets)} resets (clean state verified each time)")
    print(f"{'':<34}{'median s':>10}{'min s':>8}{'max s':>8}")
    print(f"{'cold boot to SSH-ready + cloud-init':<34}{boot:>10.2f}{min(boots):>8.2f}{max(boots):>8.2f}")
    print(f"{'reset to SSH-ready, verified':<34}{reset:>10.2f}{min(resets):>8.2f}{max(resets):>8.2f}")
    for step, seconds in steps.items():
        print(f"  reset step {step:<24}{statistics.median(seconds):>8.2f}")
    print(f"reset / cold boot = {reset / boot:.3f} (goal <= 0.050); reset under 10 s: {reset < 10}")


if __name__ == "__main__":
    main()
