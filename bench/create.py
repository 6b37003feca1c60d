"""One create with a cached image: each step's time and the total, as a table.

Usage (root, libvirtd running): .venv/bin/python bench/create.py [--template debian-12]
Runs in its own agentbox root and storage dir and destroys the workspace afterwards;
the image is taken from (or built once into) the shared image cache first, untimed.
"""

from __future__ import annotations

import argparse
import time
from itertools import pairwise

from _env import bench_services

from agentbox.model.progress import CancelToken, Progress
from agentbox.services.create import STEPS, CreateRequest, create_workspace


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--template", default="debian-12")
    args = parser.parse_args()
    marks: list[tuple[str, float]] = []

    def on_progress(progress: Progress) -> None:
        if progress.step in STEPS and (not marks or marks[-1][0] != progress.step):
            marks.append((progress.step, time.monotonic()))

    with bench_services(template=args.template) as (services, ctx):
        started = time.monotonic()
        create_workspace(ctx=ctx, request=CreateRequest(name="bench", template=args.template),
                         on_progress=on_progress, cancel=CancelToken())
        total = time.monotonic() - started
        accel = ctx.backend.capabilities.accel

    print(f"create {args.template} (cached image), accel {accel}")
    print(f"{'step':<12}{'seconds':>10}")
    for (step, at), (_, next_at) in pairwise(marks):
        print(f"{step:<12}{next_at - at:>10.2f}")
    print(f"{'total':<12}{total:>10.2f}")


if __name__ == "__main__":
    main()
