"""An isolated agentbox installation for one benchmark run: its own root, storage dir and
domain prefix, so it never sees or touches anyone's workspaces; removed afterwards."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agentbox.bootstrap import Services, build_context, build_services
from agentbox.config.paths import ROOT_ENV, SYSTEM_STORAGE_DIR, AppPaths
from agentbox.model.progress import CancelToken
from agentbox.services.context import ServiceContext


@contextmanager
def bench_services(*, template: str, egress_hosts: dict[str, str] | None = None,
                   backend: str = "libvirt", settings: str = "") -> Iterator[tuple[Services, ServiceContext]]:
    """Services on qemu:///system with the template's image ready (pulled untimed), and the
    context behind them (benchmarks look at what the facade hides: paths, the backend)."""
    run = uuid.uuid4().hex[:6]
    root = Path(tempfile.mkdtemp(prefix="agentbox-bench-"))
    storage = Path("/var/lib/libvirt/images/agentbox-tests") / f"bench-{run}"
    paths = AppPaths.under(root=root)
    paths.config_dir.mkdir(parents=True)
    hosts = "".join(f"  {name}: {address}\n" for name, address in (egress_hosts or {}).items())
    paths.settings_file.write_text(f"backend: {backend}\nstorage_dir: {storage}\n"
                                   f"image_dir: {SYSTEM_STORAGE_DIR / 'images'}\n"
                                   f"domain_prefix: abbench-{run}-\n" + (f"egress_hosts:\n{hosts}" if hosts else "")
                                   + settings)
    os.environ[ROOT_ENV] = str(root)  # for commands run through the CLI's main()
    ctx = build_context(paths=paths)
    services = build_services(ctx=ctx)
    try:
        services.images.pull(template=template, on_progress=lambda _: None, cancel=CancelToken())
        yield services, ctx
    finally:
        for workspace in services.workspaces.list():
            services.workspaces.destroy(name=workspace.name, on_progress=lambda _: None)
        shutil.rmtree(storage, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
