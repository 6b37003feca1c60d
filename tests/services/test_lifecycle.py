"""start, stop, destroy, exec and list on the Fake backend."""

from __future__ import annotations

import json

import pytest

from agentbox.backends.base import DomainState
from agentbox.errors import InvalidInput, NotFound
from agentbox.model.progress import CancelToken
from agentbox.model.workspace import WorkspaceState
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.stores.records import Phase
from agentbox.services.workspaces import WorkspaceService

from .conftest import World


def noop(_: object) -> None:
    pass


@pytest.fixture()
def service(world: World) -> WorkspaceService:
    create_workspace(ctx=world.ctx, request=CreateRequest(name="ws"), on_progress=noop, cancel=CancelToken())
    return WorkspaceService(ctx=world.ctx)


def test_graceful_stop_then_start(service: WorkspaceService, world: World) -> None:
    assert service.stop(name="ws", force=False, on_progress=noop, cancel=CancelToken()).state is WorkspaceState.STOPPED
    assert ("shutdown", "agentbox-ws") in world.backend.calls
    assert service.start(name="ws", on_progress=noop, cancel=CancelToken()).state is WorkspaceState.RUNNING


def test_stop_forces_a_guest_that_ignores_shutdown(service: WorkspaceService, world: World) -> None:
    world.backend.ignore_shutdown = True
    stopped = service.stop(name="ws", force=False, on_progress=noop, cancel=CancelToken(), timeout_s=0.5)
    assert stopped.state is WorkspaceState.STOPPED
    events = [json.loads(x)["details"] for x in world.ctx.paths.audit_log("ws").read_text().splitlines()]
    assert events[-1] == {"how": "forced"}


def test_start_of_a_running_workspace_is_refused(service: WorkspaceService) -> None:
    with pytest.raises(InvalidInput):
        service.start(name="ws", on_progress=noop, cancel=CancelToken())


def test_destroy_removes_domain_disks_and_files(service: WorkspaceService, world: World) -> None:
    service.destroy(name="ws", on_progress=noop)
    assert world.backend.list_domains() == () and world.leftovers() == []
    with pytest.raises(NotFound):
        service.get(name="ws")


def test_an_interrupted_create_is_broken_and_destroy_removes_it(service: WorkspaceService, world: World) -> None:
    record = world.ctx.records.load(name="ws")
    from dataclasses import replace
    world.ctx.records.save(record=replace(record, phase=Phase.CREATING))
    [workspace] = service.list()
    assert workspace.state is WorkspaceState.BROKEN and "interrupted" in workspace.problem
    service.destroy(name="ws", on_progress=noop)
    assert world.leftovers() == [] and world.backend.list_domains() == ()


def test_a_domain_without_its_record_is_broken_and_destroyable(service: WorkspaceService, world: World) -> None:
    world.ctx.records.remove(name="ws")
    [workspace] = service.list()
    assert workspace.state is WorkspaceState.BROKEN
    service.destroy(name="ws", on_progress=noop)
    assert world.backend.list_domains() == () and world.leftovers() == []


def test_exec_returns_the_exit_code_and_audits_it(service: WorkspaceService, world: World) -> None:
    out = bytearray()
    result = service.exec(name="ws", argv=["echo", "hi"], stdout=out.extend, stderr=noop)
    assert result.exit_code == 0 and out == b"ran\n"
    last = json.loads(world.ctx.paths.audit_log("ws").read_text().splitlines()[-1])
    assert last["event"] == "exec" and last["details"]["argv"] == ["echo", "hi"]


def test_exec_in_a_stopped_workspace_says_to_start_it(service: WorkspaceService, world: World) -> None:
    world.backend.set_state("agentbox-ws", DomainState.STOPPED)
    with pytest.raises(Exception) as failure:
        service.exec(name="ws", argv=["true"], stdout=noop, stderr=noop)
    assert "agentbox start ws" in (failure.value.hint or "")


def test_ssh_config_lists_ready_workspaces_with_pinned_keys(service: WorkspaceService, world: World, tmp_path) -> None:
    managed = service.write_ssh_config(ssh_dir=tmp_path / ".ssh")
    text = managed.path.read_text()
    assert "Host agentbox-ws" in text and "StrictHostKeyChecking yes" in text and "HostKeyAlias agentbox-ws" in text
    assert managed.included is False and managed.include_line in "Include " + str(managed.path)
    assert managed.path.stat().st_mode & 0o777 == 0o600
