"""NetworkService.approval_requests: a workspace's held connections, to be answered. On the
Fake through the recording runner, and SupervisedEgress.approvals against a real proxy's
control socket where the workspace keeps it (egress/control.sock)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentbox.backends.base import DomainState
from agentbox.egress.approvals import ApprovalBroker, ApprovalRequest, ApprovalVerdict
from agentbox.egress.control import EgressControlServer
from agentbox.errors import EgressError, NotFound
from agentbox.model.progress import CancelToken
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.services.egress_runner import SupervisedEgress
from agentbox.services.network import NetworkService
from agentbox.stores.records import WorkspaceFiles
from tests.egress.conftest import StubResolver, make_proxy, open_tunnel, policy

from .conftest import World

REQUEST = ApprovalRequest(id="7", time="2025-03-14T09:30:00.000+00:00", host="new.example", address="", port=443,
                          method="CONNECT")


def make(world: World) -> None:
    create_workspace(ctx=world.ctx, request=CreateRequest(name="ws", network="allowlist"),
                     on_progress=world.progress.append, cancel=CancelToken())


def test_the_stream_comes_from_the_runner_for_that_workspaces_files(world: World) -> None:
    make(world)
    world.egress.held["ws"] = [REQUEST]
    with NetworkService(ctx=world.ctx).approval_requests(name="ws") as stream:
        assert stream.next_request(timeout=0) == REQUEST
        assert stream.answer(request_id="7", verdict=ApprovalVerdict.ALLOW_ONCE)
    [(name, recorded)] = world.egress.approval_streams
    assert name == "ws" and recorded.answers == [("7", ApprovalVerdict.ALLOW_ONCE)] and recorded.closed


def test_an_unknown_workspace_is_refused_before_the_runner_is_asked(world: World) -> None:
    with pytest.raises(NotFound):
        NetworkService(ctx=world.ctx).approval_requests(name="nope")
    assert world.egress.approval_streams == []


def test_a_workspace_whose_proxy_is_down_says_so(world: World) -> None:
    make(world)
    world.backend.set_state("agentbox-ws", DomainState.STOPPED)
    world.egress.running.clear()
    with pytest.raises(EgressError, match="the egress proxy is not running"):
        NetworkService(ctx=world.ctx).approval_requests(name="ws")


@pytest.fixture()
def short_dir() -> Iterator[Path]:
    """A Unix socket path must stay under 108 bytes: pytest's tmp_path can be longer."""
    path = Path(tempfile.mkdtemp(prefix="ab-appr-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(30)
def test_the_process_runner_answers_a_real_proxys_held_connection(world: World, short_dir: Path) -> None:
    files = WorkspaceFiles(directory=short_dir)
    files.egress_dir.mkdir()
    runner = SupervisedEgress(paths=world.ctx.paths)
    resolver = StubResolver({"new.example": ["151.101.0.50"]})
    proxy = make_proxy(policy("allowlist", "listed.example"), resolver=resolver, approvals=ApprovalBroker(timeout=20))

    async def scenario() -> None:
        control = EgressControlServer(proxy=proxy)
        await proxy.start(tcp_port=0)
        await control.start(path=files.egress_dir / "control.sock")
        try:
            stream = await asyncio.to_thread(runner.approvals, files=files)
            with stream:
                pending = asyncio.create_task(open_tunnel(proxy.tcp_port, "new.example:443"))
                request = await asyncio.to_thread(stream.next_request, timeout=10)
                assert request is not None and (request.host, request.port) == ("new.example", 443)
                assert await asyncio.to_thread(stream.answer, request_id=request.id, verdict=ApprovalVerdict.DENY)
                status, body, _, _ = await pending
                assert status == 403 and b"approval:denied" in body
        finally:
            await control.close()
            await proxy.close()

    asyncio.run(scenario())
    assert resolver.lookups == []  # denied before the name was ever looked up
