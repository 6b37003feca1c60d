"""The `backend` setting picks where new workspaces go; a workspace stays on the backend
that made it when the setting changes (bootstrap's router over two Fakes, real records)."""

from __future__ import annotations

from dataclasses import replace

from agentbox.backends.fake import FakeBackend
from agentbox.backends.routing import BackendRouter
from agentbox.bootstrap import recorded_backends
from agentbox.model.progress import CancelToken
from agentbox.model.workspace import BackendKind, WorkspaceState
from agentbox.services.context import ServiceContext
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.services.workspaces import WorkspaceService

from .conftest import World


def _routed(world: World, *, backend: BackendKind, fakes: dict[BackendKind, FakeBackend]) -> ServiceContext:
    settings = replace(world.ctx.settings, backend=backend)
    kind_of, kinds_in_use = recorded_backends(paths=world.ctx.paths, settings=settings)
    router = BackendRouter(backends=dict(fakes), default=backend, kind_of=kind_of, kinds_in_use=kinds_in_use)
    return replace(world.ctx, settings=settings, backend=router)


def test_a_workspace_stays_on_the_backend_that_made_it(world: World) -> None:
    fakes = {BackendKind.LIBVIRT: FakeBackend(owner="test-owner"), BackendKind.QEMU: FakeBackend(owner="test-owner")}
    on_qemu = _routed(world, backend=BackendKind.QEMU, fakes=fakes)
    create_workspace(ctx=on_qemu, request=CreateRequest(name="q1"), on_progress=lambda _: None,
                     cancel=CancelToken())
    assert on_qemu.records.load(name="q1").backend == "qemu"

    on_libvirt = _routed(world, backend=BackendKind.LIBVIRT, fakes=fakes)  # the user switched the setting
    create_workspace(ctx=on_libvirt, request=CreateRequest(name="l1"), on_progress=lambda _: None,
                     cancel=CancelToken())
    workspaces = WorkspaceService(ctx=on_libvirt)
    workspaces.stop(name="q1", force=True, on_progress=lambda _: None, cancel=CancelToken())
    listed = {w.name: (w.backend, w.state) for w in workspaces.list()}
    assert listed == {"q1": (BackendKind.QEMU, WorkspaceState.STOPPED), "l1": (BackendKind.LIBVIRT,
                                                                                 WorkspaceState.RUNNING)}
    domain = on_libvirt.domain_name(name="q1")
    assert [i.name for i in fakes[BackendKind.QEMU].list_domains()] == [domain]
    assert ("destroy", domain) in fakes[BackendKind.QEMU].calls  # the forced stop went to QEMU's backend
    assert not [call for call in fakes[BackendKind.LIBVIRT].calls if call[1] == domain]
