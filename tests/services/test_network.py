"""A workspace's network on the Fake backend: policy from the template, live changes, and
the helper processes following the workspace's life (a recording stand-in runs them)."""

from __future__ import annotations

import json

import pytest

from agentbox.audit.segments import segment_paths
from agentbox.backends.base import DomainState
from agentbox.egress.policy import Decision
from agentbox.egress.records import ConnectionRecord, Outcome
from agentbox.audit import DECISION_EVENT, TRAIL_SEGMENTS, decision_trail, set_aside_unchained
from agentbox.egress.wire import dump_line, record_to_json
from agentbox.errors import EgressError, InvalidInput
from agentbox.model.network import NetworkMode
from agentbox.model.progress import CancelToken
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.services.network import NetworkService
from agentbox.services.snapshots import SnapshotService
from agentbox.services.workspaces import WorkspaceService

from .conftest import World


def make(world: World, **kwargs: object) -> None:
    create_workspace(ctx=world.ctx, request=CreateRequest(name="ws", **kwargs),  # type: ignore[arg-type]
                     on_progress=world.progress.append, cancel=CancelToken())


def test_a_new_workspace_gets_the_templates_policy_and_running_egress(world: World) -> None:
    make(world)
    policy = NetworkService(ctx=world.ctx).policy(name="ws")
    assert policy.mode is NetworkMode.OFF and policy.allowlist == ()
    assert world.egress.running == {"ws"}
    assert "network" in [p.step for p in world.progress]


def test_create_network_flag_overrides_the_template(world: World) -> None:
    make(world, network="open")
    assert NetworkService(ctx=world.ctx).policy(name="ws").mode is NetworkMode.OPEN


def test_a_bad_network_mode_is_refused_before_anything_is_made(world: World) -> None:
    with pytest.raises(InvalidInput):
        make(world, network="wide-open")
    assert world.backend.calls == [] and world.leftovers() == []


def test_egress_that_cannot_start_fails_create_and_leaves_nothing(world: World) -> None:
    world.egress.fail_start = True
    with pytest.raises(EgressError):
        make(world)
    assert world.leftovers() == [] and world.backend.list_domains() == ()


def test_a_live_mode_switch_goes_to_the_proxy_and_cuts_what_it_forbids(world: World) -> None:
    make(world, network="open")
    update = NetworkService(ctx=world.ctx).set_mode(name="ws", mode="off")
    assert update.live and update.cut == 1 and world.egress.policies[-1].mode is NetworkMode.OFF
    audit = [json.loads(line) for line in world.ctx.paths.audit_log("ws").read_text().splitlines()]
    assert audit[-1]["event"] == "network.policy" and audit[-1]["details"]["mode"] == "off"


def test_allow_and_deny_entries(world: World) -> None:
    make(world)
    network = NetworkService(ctx=world.ctx)
    network.set_mode(name="ws", mode="allowlist")
    network.allow(name="ws", entry="*.PyPI.org")
    network.allow(name="ws", entry="10.0.2.2:8080")
    assert network.policy(name="ws").render() == ("*.pypi.org", "10.0.2.2:8080")
    network.deny(name="ws", entry="*.pypi.org")
    assert network.policy(name="ws").render() == ("10.0.2.2:8080",)
    with pytest.raises(InvalidInput, match="not on the allowlist"):
        network.deny(name="ws", entry="example.org")
    with pytest.raises(InvalidInput):
        network.allow(name="ws", entry="http://example.org/path")


def test_a_stopped_workspace_changes_only_its_policy_file(world: World) -> None:
    make(world)
    WorkspaceService(ctx=world.ctx).stop(name="ws", force=True, on_progress=world.progress.append,
                                         cancel=CancelToken())
    assert world.egress.running == set()  # stopping took the helpers down
    update = NetworkService(ctx=world.ctx).set_mode(name="ws", mode="open")
    assert not update.live and world.egress.policies == []
    assert NetworkService(ctx=world.ctx).policy(name="ws").mode is NetworkMode.OPEN


def test_start_reset_and_destroy_carry_the_helpers_along(world: World) -> None:
    make(world)
    workspaces = WorkspaceService(ctx=world.ctx)
    workspaces.stop(name="ws", force=True, on_progress=world.progress.append, cancel=CancelToken())
    workspaces.start(name="ws", on_progress=world.progress.append, cancel=CancelToken())
    assert world.egress.running == {"ws"}
    world.egress.running.clear()  # the helpers died
    SnapshotService(ctx=world.ctx).reset(name="ws", on_progress=world.progress.append, cancel=CancelToken())
    assert world.egress.running == {"ws"}  # reset brought them back
    workspaces.destroy(name="ws", on_progress=world.progress.append)
    assert world.egress.running == set()


def test_a_checkpoint_never_holds_a_live_forward(world: World) -> None:
    make(world)
    world.egress.running.clear()
    SnapshotService(ctx=world.ctx).checkpoint(name="ws", label="one")
    assert world.egress.forward_stopped == ["ws"] and world.egress.running == {"ws"}


def test_show_says_what_the_guest_can_reach(world: World) -> None:
    make(world)
    network = NetworkService(ctx=world.ctx)
    network.set_mode(name="ws", mode="allowlist")
    assert network.show(name="ws").egress == "only the allowlist, through the egress proxy"
    world.egress.fail_start = True
    world.egress.running.clear()
    status = network.show(name="ws")
    assert not status.proxy_running and status.egress.startswith("none (fail closed)")
    world.backend.set_state("agentbox-ws", DomainState.STOPPED)
    assert network.show(name="ws").egress == "none: the workspace is not running"


def decision(n: int) -> ConnectionRecord:
    return ConnectionRecord(time=f"2025-03-14T09:30:{n % 60:02d}.000+00:00", host=f"host{n}.example", address="",
                            port=443, method="CONNECT", decision=Decision(False, "off", "network is off"),
                            outcome=Outcome.DENIED, bytes_up=0, bytes_down=0, duration_s=0.0)


def test_the_net_log_is_followed_through_rotations_and_read_from_its_end(world: World) -> None:
    make(world)
    network = NetworkService(ctx=world.ctx)
    path = world.ctx.records.files(name="ws").net_log
    trail = decision_trail(path=path, rotate_bytes=1200)  # about 3 decisions a file
    follow = network.records(name="ws", follow=True, cancel=CancelToken())
    written = 0
    for _ in range(4):  # each batch rotates the file the follower is in, twice
        for _ in range(7):
            trail.append(event=DECISION_EVENT, details=record_to_json(decision(written)))
            written += 1
        assert [next(follow).host for _ in range(7)] == [f"host{n}.example" for n in range(written - 7, written)]
    follow.close()
    assert len(segment_paths(path)) == TRAIL_SEGMENTS  # the oldest were dropped
    kept = [r.host for r in network.records(name="ws")]
    assert kept == [f"host{n}.example" for n in range(written - len(kept), written)] and len(kept) < written
    assert [r.host for r in network.recent(name="ws", count=3)] == [f"host{n}.example" for n in (25, 26, 27)]


def test_recent_decisions_pass_over_a_damaged_line(world: World) -> None:
    make(world)
    network = NetworkService(ctx=world.ctx)
    assert network.recent(name="ws", count=3) == ()  # no log yet
    path = world.ctx.records.files(name="ws").net_log
    trail = decision_trail(path=path)
    trail.append(event=DECISION_EVENT, details=record_to_json(decision(1)))
    with path.open("ab") as log:
        log.write(b"not json\n")
    trail.append(event=DECISION_EVENT, details=record_to_json(decision(2)))
    trail.append(event="gateway.other", details={"host": "not a decision"})  # another event: not shown
    with path.open("ab") as log:
        log.write(b'{"time": "partial')
    assert [r.host for r in network.recent(name="ws", count=5)] == ["host1.example", "host2.example"]


def test_decisions_from_before_the_chain_are_read_before_the_chained_ones(world: World) -> None:
    make(world)
    network = NetworkService(ctx=world.ctx)
    path = world.ctx.records.files(name="ws").net_log
    path.write_bytes(dump_line(record_to_json(decision(1))) + dump_line(record_to_json(decision(2))))
    assert set_aside_unchained(path) == 1  # what a proxy does when it starts
    decision_trail(path=path).append(event=DECISION_EVENT, details=record_to_json(decision(3)))
    assert [r.host for r in network.records(name="ws")] == ["host1.example", "host2.example", "host3.example"]
    assert [r.host for r in network.recent(name="ws", count=2)] == ["host2.example", "host3.example"]
