"""One create with a cached image: each step's time and the total, as a table.

Usage (root, libvirtd running): .venv/bin/python bench/create.py [--template debian-12]
Runs in its own agentbox root and storage dir and destroys the workspace afterwards;
the image is taken from (or built once into) the shared image cache first, untimed.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from agentbox.bootstrap import build_context, build_services
from agentbox.config.paths import SYSTEM_STORAGE_DIR, AppPaths
from agentbox.model.progress import CancelToken, Progress
from agentbox.services.create import STEPS, CreateRequest, create_workspace


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--template", default="debian-12")
    args = parser.parse_args()
    run = uuid.uuid4().hex[:6]
    root = Path(tempfile.mkdtemp(prefix="agentbox-bench-"))
    storage = Path("/var/lib/libvirt/images/agentbox-tests") / f"bench-{run}"
    paths = AppPaths.under(root=root)
    paths.config_dir.mkdir(parents=True)
    paths.settings_file.write_text(f"storage_dir: {storage}\nimage_dir: {SYSTEM_STORAGE_DIR / 'images'}\n"
                                   f"domain_prefix: abbench-{run}-\n")
    services = build_services(ctx=build_context(paths=paths))
    services.images.pull(template=args.template, on_progress=lambda _: None, cancel=CancelToken())

    marks: list[tuple[str, float]] = []

    def on_progress(progress: Progress) -> None:
        if progress.step in STEPS and (not marks or marks[-1][0] != progress.step):
            marks.append((progress.step, time.monotonic()))

    started = time.monotonic()
    try:
        create_workspace(ctx=services.ctx, request=CreateRequest(name="bench", template=args.template),
                         on_progress=on_progress, cancel=CancelToken())
        total = time.monotonic() - started
    finally:
        for workspace in services.workspaces.list():
            services.workspaces.destroy(name=workspace.name, on_progress=lambda _: None)
        shutil.rmtree(storage, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)

    print(f"create {args.template} (cached image), accel {services.ctx.backend.capabilities.accel}")
    print(f"{'step':<12}{'seconds':>10}")
    for (step, at), (_, next_at) in zip(marks, marks[1:]):
        print(f"{step:<12}{next_at - at:>10.2f}")
    print(f"{'total':<12}{total:>10.2f}")


if __name__ == "__main__":
    main()
