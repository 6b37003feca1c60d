"""`agentbox run` in a process of its own, on the Fake backend (as in tests/services), for
tests that signal it the way a terminal or `kill` would. The scripted guest runs `hang`
until cancelled, and says when it has started by creating WORK/running.

    python -m tests.cli.fake_run WORK -- COMMAND...

With FAKE_RUN_SIGNAL_IN_CLEANUP=N in its environment, it sends itself signal N as the
cleanup begins to remove the VM (the second signal of an impatient user or system).

Before it exits, it writes WORK/left.json: what the run left behind (domains, workspace
folders), for the test to read once the process is gone."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from agentbox import bootstrap
from agentbox.backends.fake import FakeBackend
from agentbox.config.paths import AppPaths
from agentbox.config.settings import Settings
from agentbox.config.templates import TemplateCatalogue, builtin_templates_dir, fragments_dir
from agentbox.entry import main
from agentbox.images.store import ImageStore
from agentbox.services.context import ServiceContext
from tests.services.conftest import RecordingEgress, ScriptedGuest


class SignalledInCleanup(FakeBackend):
    def __init__(self, *, owner: str, work: Path, signum: int | None) -> None:
        super().__init__(owner=owner)
        self._work, self._signum = work, signum

    def destroy(self, *, name: str) -> None:
        if self._signum is not None and (self._work / "running").exists():
            signum, self._signum = self._signum, None
            os.kill(os.getpid(), signum)  # its handler runs before the next line
        super().destroy(name=name)


def fake_context(work: Path, *, backend: FakeBackend, guest: ScriptedGuest, egress: RecordingEgress) -> ServiceContext:
    """The world of tests/services under WORK: a tiny template over a blank qcow2 image, the
    storage and image dirs there too. Several processes may build it for one WORK."""
    disk = work / "src" / "base.qcow2"
    if not disk.exists():
        disk.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1G"], check=True)
    digest = hashlib.sha256(disk.read_bytes()).hexdigest()
    paths = AppPaths.under(root=work / "root")
    paths.user_templates_dir.mkdir(parents=True, exist_ok=True)
    (paths.user_templates_dir / "tiny.yaml").write_text(
        f"name: tiny\nimage:\n  url: file://{disk}\n  sha256: {digest}\ncloud_init:\n  fragments: [base.yaml]\n")
    settings = Settings(libvirt_uri="fake:///", storage_dir=work / "storage", image_dir=work / "images",
                        default_template="tiny", boot_timeout_s=30)
    return ServiceContext(paths=paths, settings=settings, backend=backend,
                          catalogue=TemplateCatalogue(builtin_dir=builtin_templates_dir(),
                                                      user_dir=paths.user_templates_dir),
                          images=ImageStore(image_dir=settings.image_dir), guest=guest,
                          fragments_dir=fragments_dir(), owner="test-owner", egress=egress)


def hanging_context(work: Path) -> tuple[ServiceContext, FakeBackend]:
    again = os.environ.get("FAKE_RUN_SIGNAL_IN_CLEANUP")
    backend = SignalledInCleanup(owner="test-owner", work=work, signum=int(again) if again else None)

    def started(argv: Sequence[str], stdout: Callable[[bytes], None]) -> int | None:
        if argv[:1] == ["hang"]:
            stdout(b"hanging\n")
            (work / "running").touch()
        return None  # then the scripted guest's own answer: `hang` runs until cancelled

    return fake_context(work, backend=backend, guest=ScriptedGuest(reply=started), egress=RecordingEgress()), backend


def run(work: Path, argv: list[str]) -> int:
    ctx, backend = hanging_context(work)
    services = bootstrap.build_services(ctx=ctx)
    bootstrap.build_services = lambda **_: services  # what the CLI's commands call
    try:
        return main(["run", *argv])
    finally:
        workspaces = ctx.paths.workspaces_dir
        (work / "left.json").write_text(json.dumps({
            "domains": [d.name for d in backend.list_domains()],
            "workspaces": sorted(p.name for p in workspaces.iterdir()) if workspaces.exists() else [],
            "disks": sorted(str(p) for p in (work / "storage").rglob("*") if p.is_file()),
        }))


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1]), sys.argv[2:]))
