"""The two backends side by side, in one run: create (cold boot → SSH → cloud-init → clean
snapshot), reset (to SSH-ready, canary checked) and an exec round trip (`true` over SSH),
on libvirt and on QEMU driven directly; medians, and each figure as a ratio to libvirt's.

Usage (root, libvirtd running): .venv/bin/python bench/backends.py [--resets 3] [--execs 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

from _env import bench_services

from agentbox.model.progress import CancelToken
from agentbox.services.create import CreateRequest, create_workspace

BACKENDS = ("libvirt", "qemu")
CANARY = "/home/agent/bench-canary"


def run(services, name: str, *argv: str) -> str:  # type: ignore[no-untyped-def]
    out = bytearray()
    result = services.workspaces.exec(name=name, argv=list(argv), stdout=out.extend, stderr=lambda _: None)
    if result.exit_code != 0:
        raise SystemExit(f"`{' '.join(argv)}` failed in {name} with {result.exit_code}")
    return out.decode()


def measure(*, backend: str, template: str, resets: int, execs: int) -> dict[str, float]:
    with bench_services(template=template, backend=backend) as (services, ctx):
        started = time.monotonic()
        create_workspace(ctx=ctx, request=CreateRequest(name="b0", template=template),
                         on_progress=lambda _: None, cancel=CancelToken())
        create = time.monotonic() - started
        reset_times = []
        for _ in range(resets):
            run(services, "b0", "sh", "-c", f"echo dirty > {CANARY} && sync")
            started = time.monotonic()
            services.snapshots.reset(name="b0", on_progress=lambda _: None, cancel=CancelToken())
            state = run(services, "b0", "sh", "-c", f"test -e {CANARY} && echo dirty || echo clean")
            reset_times.append(time.monotonic() - started)
            if state.strip() != "clean":
                raise SystemExit(f"{backend}: the canary survived a reset")
        exec_times = []
        for _ in range(execs):
            started = time.monotonic()
            run(services, "b0", "true")
            exec_times.append(time.monotonic() - started)
        accel = ctx.backend.capabilities.accel
    print(f"{backend}: accel {accel}, 1 create, {resets} resets, {execs} execs", flush=True)
    return {"create": create, "reset": statistics.median(reset_times), "exec": statistics.median(exec_times)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--template", default="debian-12")
    parser.add_argument("--resets", type=int, default=3)
    parser.add_argument("--execs", type=int, default=10)
    args = parser.parse_args()
    figures = {backend: measure(backend=backend, template=args.template, resets=args.resets, execs=args.execs)
               for backend in BACKENDS}
    base = figures["libvirt"]
    print(f"{'':<10}" + "".join(f"{backend + ' s':>12}{'ratio':>8}" for backend in BACKENDS))
    for what in ("create", "reset", "exec"):
        cells = "".join(f"{figures[b][what]:>12.2f}{figures[b][what] / base[what]:>8.2f}" for b in BACKENDS)
        print(f"{what:<10}{cells}")
    print("ratio: the backend's median over libvirt's (below 1: faster than libvirt)")


if __name__ == "__main__":
    main()
