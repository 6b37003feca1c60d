"""Workspaces on several libvirt hosts: each stays on the host that made it when
`libvirt_uri` changes, `list` names its host, and the disks go to that host (bootstrap's
per-host router over Fakes, real records)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agentbox.backends.fake import FakeBackend
from agentbox.backends.routing import BackendRouter
from agentbox.bootstrap import libvirt_hosts
from agentbox.errors import BackendUnavailable
from agentbox.model.progress import CancelToken
from agentbox.model.workspace import BackendKind
from agentbox.services.context import ServiceContext
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.services.workspaces import WorkspaceService

from .conftest import World

FAR = "qemu+ssh://root@far.example:2200/system"
LOCAL = "qemu:///system"


def _on(world: World, *, uri: str, fakes: dict[str, FakeBackend]) -> ServiceContext:
    settings = replace(world.ctx.settings, libvirt_uri=uri, hosts=(FAR,), backend=BackendKind.LIBVIRT)
    router = libvirt_hosts(paths=world.ctx.paths, settings=settings, make_backend=lambda u: fakes[u])
    return replace(world.ctx, settings=settings, backend=router)


def test_a_workspace_stays_on_its_host_and_list_names_it(world: World) -> None:
    fakes = {FAR: FakeBackend(owner="test-owner"), LOCAL: FakeBackend(owner="test-owner")}
    far = _on(world, uri=FAR, fakes=fakes)
    create_workspace(ctx=far, request=CreateRequest(name="r1"), on_progress=lambda _: None, cancel=CancelToken())
    assert far.records.load(name="r1").remote_uri == FAR

    here = _on(world, uri=LOCAL, fakes=fakes)  # the user pointed libvirt_uri back at this machine
    create_workspace(ctx=here, request=CreateRequest(name="l1"), on_progress=lambda _: None, cancel=CancelToken())
    assert here.records.load(name="l1").remote_uri == ""
    workspaces = WorkspaceService(ctx=here)
    assert {w.name: w.host for w in workspaces.list()} == {"r1": "far.example:2200", "l1": ""}
    workspaces.stop(name="r1", force=True, on_progress=lambda _: None, cancel=CancelToken())
    domain = here.domain_name(name="r1")
    assert ("destroy", domain) in fakes[FAR].calls
    assert not [call for call in fakes[LOCAL].calls if call[1] == domain]
    assert [i.name for i in fakes[LOCAL].list_domains()] == [here.domain_name(name="l1")]


def test_a_host_named_nowhere_is_refused_not_guessed() -> None:
    router: BackendRouter[str] = BackendRouter(backends={LOCAL: FakeBackend(owner="o")}, default=LOCAL,
                                               kind_of=lambda _: FAR, kinds_in_use=lambda: frozenset({FAR}))
    with pytest.raises(BackendUnavailable) as raised:
        router.start(name="x")
    assert f"the libvirt host {FAR}" in str(raised.value)
