"""create: every step, and nothing left behind when any step fails."""

from __future__ import annotations

import json

import pytest

from agentbox.backends.base import DomainState
from agentbox.errors import AlreadyExists, BackendError, Busy, Cancelled, GuestError
from agentbox.model.progress import CancelToken
from agentbox.model.workspace import WorkspaceState
from agentbox.services.create import STEPS, CreateRequest, create_workspace
from agentbox.host.locks import workspace_lock
from agentbox.stores.records import Phase
from agentbox.services.workspaces import WorkspaceService

from .conftest import World


def create(world: World, name: str = "ws", cancel: CancelToken | None = None, **kwargs):  # type: ignore[no-untyped-def]
    return create_workspace(ctx=world.ctx, request=CreateRequest(name=name, **kwargs),
                            on_progress=world.progress.append, cancel=cancel or CancelToken())


def test_create_defines_boots_and_records_a_ready_workspace(world: World) -> None:
    record = create(world, vcpus=1, memory_mib=512)
    assert record.phase is Phase.READY
    spec = world.backend.defined_spec("agentbox-ws")
    assert (spec.vcpus, spec.memory_mib) == (1, 512)
    assert spec.disks[1].readonly and spec.disks[1].path.name == "seed.img"
    assert spec.metadata.workspace == "ws" and spec.metadata.owner == "test-owner"
    assert world.backend.get(name="agentbox-ws").state is DomainState.RUNNING
    assert world.guest.commands[0] == ["cloud-init", "status", "--wait", "--long"]
    [workspace] = WorkspaceService(ctx=world.ctx).list()
    assert (workspace.name, workspace.state, workspace.ssh_port) == ("ws", WorkspaceState.RUNNING, record.ssh_port)
    files = world.ctx.records.files(name="ws")
    assert files.client_key.stat().st_mode & 0o777 == 0o600
    assert record.host_key_public in files.known_hosts.read_text()


def test_create_reports_every_step_in_order(world: World) -> None:
    create(world)
    steps = [p.step for p in world.progress if p.step in STEPS]
    assert steps == list(STEPS)


def test_create_writes_an_audit_trail(world: World) -> None:
    create(world)
    lines = [json.loads(line) for line in world.ctx.paths.audit_log("ws").read_text().splitlines()]
    assert [line["event"] for line in lines] == ["create.started", "created"]
    assert lines[0]["prev"] == "0" * 64 and lines[1]["prev"] != lines[0]["prev"]


@pytest.mark.parametrize("failing", ["create_overlay", "define", "start"])
def test_a_backend_failure_undoes_everything(world: World, failing: str) -> None:
    world.backend.fail_on.add(failing)
    with pytest.raises(BackendError):
        create(world)
    assert world.backend.list_domains() == ()
    assert world.leftovers() == []
    assert WorkspaceService(ctx=world.ctx).list() == ()


def test_a_guest_that_never_answers_undoes_everything(world: World) -> None:
    world.guest.answers = False
    with pytest.raises(GuestError):
        create(world)
    assert world.backend.list_domains() == () and world.leftovers() == []


def test_failed_cloud_init_fails_create_with_its_output(world: World) -> None:
    world.guest.cloud_init_output, world.guest.cloud_init_code = b"status: error\nbad module\n", 1
    with pytest.raises(GuestError) as failure:
        create(world)
    assert "bad module" in failure.value.message
    assert world.leftovers() == []


def test_a_vm_that_dies_while_booting_is_reported(world: World) -> None:
    world.guest.on_wait = lambda: world.backend.set_state("agentbox-ws", DomainState.STOPPED)
    with pytest.raises(GuestError) as failure:
        create(world)
    assert "stopped while booting" in failure.value.message
    assert world.leftovers() == []


def test_cancel_undoes_everything(world: World) -> None:
    token = CancelToken()
    world.guest.on_wait = token.cancel
    original = world.guest.wait_until_ready

    def wait(**kwargs):  # type: ignore[no-untyped-def]
        original(**kwargs)
        kwargs["cancel"].raise_if_cancelled()

    world.guest.wait_until_ready = wait  # type: ignore[method-assign]
    with pytest.raises(Cancelled):
        create(world, cancel=token)
    assert world.backend.list_domains() == () and world.leftovers() == []


def test_an_existing_name_is_refused_without_touching_it(world: World) -> None:
    create(world)
    with pytest.raises(AlreadyExists):
        create(world)
    assert world.backend.get(name="agentbox-ws").state is DomainState.RUNNING


def test_a_busy_workspace_is_refused(world: World) -> None:
    with workspace_lock(paths=world.ctx.paths, name="ws"), pytest.raises(Busy):
        create(world)


def test_someone_elses_domain_with_the_same_name_is_never_taken_over(world: World) -> None:
    world.backend.foreign("agentbox-ws")
    with pytest.raises(AlreadyExists):
        create(world)
    assert WorkspaceService(ctx=world.ctx).list() == ()
