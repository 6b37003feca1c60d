"""`agentbox outbox NAME` shows how much of its size limit the outbox uses, and
`--limit-mib` changes it, through main(argv) on the Fake backend with the real loop-mounted
outbox (the tests run as root)."""

from __future__ import annotations

import json

import pytest

from agentbox import bootstrap
from agentbox.host import outbox_disk
from agentbox.services.create import CreateRequest
from tests.cli.fake_cli import run_main, with_workspace
from tests.services.conftest import World, world  # noqa: F401 - the Fake world, as a fixture here

pytestmark = pytest.mark.skipif(bool(outbox_disk.unavailable_reason()), reason=outbox_disk.unavailable_reason())


@pytest.fixture()
def cli(world: World, monkeypatch: pytest.MonkeyPatch) -> World:  # noqa: F811
    return with_workspace(world, monkeypatch, request=CreateRequest(name="ws", outbox_mib=32))


run = run_main


def test_outbox_shows_used_and_limit(cli: World, capsys: pytest.CaptureFixture[str]) -> None:
    box = bootstrap.build_services().outbox.directory(name="ws")
    (box / "result.bin").write_bytes(b"\0" * (3 << 20))
    code, out, _ = run(["outbox", "ws"], capsys)
    assert code == 0
    assert out.splitlines()[0] == "used 3.0 MiB of 32.0 MiB (9%), limit enforced on the host"
    assert "result.bin" in out
    code, out, _ = run(["outbox", "ws", "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["limit_bytes"] == 32 << 20 and doc["enforced"] is True
    assert (3 << 20) <= doc["used_bytes"] < (4 << 20) and [e["path"] for e in doc["entries"]] == ["result.bin"]


def test_outbox_limit_mib_resizes_and_refuses_what_does_not_fit(cli: World,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    box = bootstrap.build_services().outbox.directory(name="ws")
    (box / "result.bin").write_bytes(b"\0" * (20 << 20))
    code, _, err = run(["outbox", "ws", "--limit-mib", "48"], capsys)
    assert code == 2 and "ws is running" in err and "agentbox stop ws" in err
    assert run(["stop", "ws", "--force"], capsys)[0] == 0
    code, out, _ = run(["outbox", "ws", "--limit-mib", "48"], capsys)
    assert code == 0 and out == "the outbox of ws now holds up to 48.0 MiB (20.0 MiB used)\n"
    code, _, err = run(["outbox", "ws", "--limit-mib", "16"], capsys)
    assert code == 2 and "holds 20.0 MiB, more than 16 MiB" in err and "--export" in err
    code, _, err = run(["outbox", "ws", "--limit-mib", "4"], capsys)
    assert code == 2 and "--limit-mib 4 is out of range 16..1048576" in err
    code, _, err = run(["outbox", "ws", "--limit-mib", "64", "--clear"], capsys)
    assert code == 2 and "a step of its own" in err
    assert run(["outbox", "ws"], capsys)[1].startswith("used 20.0 MiB of 48.0 MiB")
