"""Cold create against warm-clone create, both to SSH-ready with the clean state saved.

Usage (root, libvirtd running): .venv/bin/python bench/create.py [--template debian-12]
Runs in its own agentbox root and storage dir and destroys everything afterwards. The image
is taken from (or built once into) the shared image cache first, untimed. The golden state
is built once (a cold boot and a RAM save), timed on its own line: every later warm create
of the same recipe reuses it. Then one cold create (`--no-warm`) and one warm create, each
with its steps.
"""

from __future__ import annotations

import argparse
import time
from itertools import pairwise

from _env import bench_services

from agentbox.model.progress import CancelToken, Progress
from agentbox.services.create import STEPS, WARM_STEPS, CreateRequest, create_workspace, resolve_resources
from agentbox.services.golden import GoldenStore

Marks = list[tuple[str, float]]


def _timed(ctx, name: str, *, template: str, warm: bool) -> tuple[float, Marks]:  # type: ignore[no-untyped-def]
    marks: Marks = []
    steps = WARM_STEPS if warm else STEPS

    def on_progress(progress: Progress) -> None:
        if progress.step in steps and (not marks or marks[-1][0] != progress.step):
            marks.append((progress.step, time.monotonic()))

    started = time.monotonic()
    record = create_workspace(ctx=ctx, request=CreateRequest(name=name, template=template, warm=warm),
                              on_progress=on_progress, cancel=CancelToken())
    total = time.monotonic() - started
    if bool(record.golden_id) != warm:
        raise SystemExit(f"{name}: asked for warm={warm} but got golden_id={record.golden_id!r}")
    return total, marks


def _print_steps(title: str, total: float, marks: Marks) -> None:
    print(f"{title}: {total:.2f} s")
    for (step, at), (_, next_at) in pairwise(marks):
        print(f"  {step:<12}{next_at - at:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--template", default="debian-12")
    args = parser.parse_args()
    with bench_services(template=args.template) as (services, ctx):
        template = ctx.catalogue.get(name=args.template)
        image = ctx.images.find(template=template)
        assert image is not None
        resources = resolve_resources(template=template, request=CreateRequest(name="x"))
        started = time.monotonic()
        GoldenStore(ctx=ctx).ensure(template=template, resources=resources, image=image,
                                    on_progress=lambda _: None, cancel=CancelToken())
        golden_s = time.monotonic() - started
        cold, cold_marks = _timed(ctx, "cold", template=args.template, warm=False)
        services.workspaces.destroy(name="cold", on_progress=lambda _: None)
        warm, warm_marks = _timed(ctx, "warm", template=args.template, warm=True)
        accel = ctx.backend.capabilities.accel

    print(f"create {args.template} (cached image), accel {accel}; one run each")
    print(f"golden state built once (cold boot + RAM save, untimed below): {golden_s:.2f} s")
    _print_steps("cold create (--no-warm)", cold, cold_marks)
    _print_steps("warm create (clone of the golden state)", warm, warm_marks)
    print(f"warm / cold = {warm / cold:.3f} (goal <= 0.125)")


if __name__ == "__main__":
    main()
