"""`agentbox net NAME learn` and `net propose` through main(argv) on the Fake backend, with a
decision trail written as the proxy writes it."""

from __future__ import annotations

import json

import pytest
import yaml

from agentbox import bootstrap
from agentbox.egress.policy import Decision
from agentbox.egress.records import ConnectionRecord, Outcome
from agentbox.audit import DECISION_EVENT, decision_trail
from agentbox.egress.wire import record_to_json
from tests.cli.fake_cli import run_main, with_workspace
from tests.services.conftest import World, world  # noqa: F401 - the Fake world, as a fixture here


@pytest.fixture()
def cli(world: World, monkeypatch: pytest.MonkeyPatch) -> World:  # noqa: F811
    return with_workspace(world, monkeypatch)


run = run_main


def write_log(at: World, uses: list[tuple[str, int, bool]]) -> None:
    trail = decision_trail(path=at.ctx.records.files(name="ws").net_log)
    for host, port, allowed in uses:
        record = ConnectionRecord(time="2026-12-03T08:00:00.000+00:00", host=host, address="93.184.215.14",
                                  port=port, method="CONNECT",
                                  decision=Decision(allowed, "mode:learn" if allowed else "blocked:x", "why"),
                                  outcome=Outcome.COMPLETED if allowed else Outcome.DENIED, bytes_up=1,
                                  bytes_down=2, duration_s=0.1)
        trail.append(event=DECISION_EVENT, details=record_to_json(record))


USES = [("pypi.org", 443, True), ("files.pythonhosted.org", 443, True), ("a.cdn.example", 443, True),
        ("b.cdn.example", 443, True), ("c.cdn.example", 443, True), ("evil.example", 443, False),
        ("pypi.org", 443, True)]


def audit_events(at: World) -> list[dict[str, object]]:
    return [json.loads(line) for line in at.ctx.paths.audit_log("ws").read_text().splitlines()]


def test_learn_mode_is_set_and_shown(cli: World, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["net", "ws", "learn"], capsys)
    assert code == 0 and "network learn" in out
    code, out, _ = run(["net", "show", "ws"], capsys)
    assert "network learn" in out and "each one recorded" in out and "net propose ws" in out
    assert audit_events(cli)[-1]["details"]["mode"] == "learn"


def test_propose_prints_the_smallest_allowlist_and_changes_nothing(cli: World,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run(["net", "ws", "learn"], capsys)
    write_log(cli, USES)
    code, out, _ = run(["net", "propose", "ws"], capsys)
    assert code == 0
    assert "6 allowed and 1 refused" in out
    lines = [line.split()[0] for line in out.splitlines()[1:]]
    assert lines == ["*.cdn.example:443", "files.pythonhosted.org:443", "pypi.org:443"]
    assert "covers a.cdn.example, b.cdn.example, c.cdn.example" in out and "evil" not in out
    code, out, _ = run(["net", "propose", "ws", "--json"], capsys)
    assert [p["entry"] for p in json.loads(out)["proposal"]] == lines
    policy = bootstrap.build_services().network.policy(name="ws")
    assert policy.mode.value == "learn" and policy.allowlist == ()


def test_apply_sets_it_switches_to_allowlist_and_is_audited(cli: World, capsys: pytest.CaptureFixture[str]) -> None:
    run(["net", "ws", "learn"], capsys)
    write_log(cli, USES)
    code, out, _ = run(["net", "propose", "ws", "--exclude", "files.pythonhosted.org:443", "--apply"], capsys)
    assert code == 0 and "(excluded)" in out and "network allowlist, allowlist *.cdn.example:443, pypi.org:443" in out
    policy = bootstrap.build_services().network.policy(name="ws")
    assert policy.mode.value == "allowlist" and policy.render() == ("*.cdn.example:443", "pypi.org:443")
    events = audit_events(cli)
    assert events[-2]["event"] == "network.policy" and events[-2]["details"]["mode"] == "allowlist"
    assert events[-1]["event"] == "network.proposal_applied"


def test_save_writes_a_user_template_that_loads(cli: World, capsys: pytest.CaptureFixture[str]) -> None:
    write_log(cli, USES)
    code, out, _ = run(["net", "propose", "ws", "--save", "my-agent"], capsys)
    path = cli.ctx.catalogue.user_dir / "my-agent.yaml"
    assert code == 0 and f"saved as template 'my-agent': {path}" in out
    saved = yaml.safe_load(path.read_text())
    assert saved["name"] == "my-agent" and saved["policy"]["network"] == "allowlist"
    assert saved["policy"]["allowlist"] == ["*.cdn.example:443", "files.pythonhosted.org:443", "pypi.org:443"]
    template = cli.ctx.catalogue.get(name="my-agent")
    assert template.policy.allowlist == tuple(saved["policy"]["allowlist"])
    base = cli.ctx.catalogue.get(name=cli.ctx.records.load(name="ws").template)  # type: ignore[union-attr]
    assert template.image == base.image and template.resources == base.resources, "the rest comes from ws's template"
    assert bootstrap.build_services().network.policy(name="ws").allowlist == (), "save alone applies nothing"


def test_propose_refuses_what_it_cannot_do(cli: World, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["net", "propose", "ws", "--apply"], capsys)
    assert code == 2 and "no allowed connection" in err and "net ws learn" in err
    write_log(cli, USES)
    code, _, err = run(["net", "propose", "ws", "--exclude", "example.org", "--apply"], capsys)
    assert code == 2 and "not in the proposal" in err
    code, _, err = run(["net", "propose", "ws", "--save", "Bad Name"], capsys)
    assert code == 2 and "not a valid template name" in err
    assert not (cli.ctx.catalogue.user_dir / "Bad Name.yaml").exists()
