"""main(argv) against the Fake world of tests/services (one Services object for every
command of a test, so state stays in the fakes) with one workspace made first."""

from __future__ import annotations

import pytest

from agentbox import bootstrap
from agentbox.cli.main import main
from agentbox.model.progress import CancelToken
from agentbox.services.create import CreateRequest
from tests.services.conftest import World


def with_workspace(world: World, monkeypatch: pytest.MonkeyPatch, *,
                   request: CreateRequest | None = None) -> World:
    services = bootstrap.build_services(ctx=world.ctx)
    monkeypatch.setattr(bootstrap, "build_services", lambda **_: services)
    services.create.create(request=request or CreateRequest(name="ws"), on_progress=lambda _: None,
                           cancel=CancelToken())
    return world


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of one command (argparse's own exits included)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err
