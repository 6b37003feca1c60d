"""The control socket and its synchronous client, as the CLI and TUI will use them: read and
swap the policy, see status, watch decisions, answer approvals; errors come back as
agentbox errors."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from agentbox.egress.approvals import ApprovalBroker, ApprovalVerdict
from agentbox.egress.client import EgressControlClient
from agentbox.egress.control import EgressControlServer
from agentbox.egress.proxy import EgressProxy
from agentbox.egress.records import Outcome
from agentbox.errors import EgressError, InvalidInput
from agentbox.model.network import NetworkMode
from tests.egress.conftest import LoopbackConnector, StubResolver, echo_server, make_proxy, open_tunnel, policy, until

pytestmark = pytest.mark.timeout(30)


@asynccontextmanager
async def controlled(tmp_path: Path, proxy: EgressProxy) -> AsyncIterator[EgressControlClient]:
    control = EgressControlServer(proxy=proxy)
    path = tmp_path / "control.sock"
    await proxy.start(tcp_port=0)
    await control.start(path=path)
    try:
        yield EgressControlClient(socket_path=path, timeout=10)
    finally:
        await control.close()
        await proxy.close()


def test_get_and_set_policy_and_status(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with echo_server() as port:
            proxy = make_proxy(policy("allowlist", f"127.0.0.1:{port}"))
            async with controlled(tmp_path, proxy) as client:
                assert stat.S_IMODE(os.stat(client.socket_path).st_mode) == 0o600
                assert (await asyncio.to_thread(client.get_policy)).render() == (f"127.0.0.1:{port}",)
                _, _, _, writer = await open_tunnel(proxy.tcp_port, f"127.0.0.1:{port}")
                status = await asyncio.to_thread(client.status)
                assert (status.pid, status.mode, status.open_connections, status.pending_approvals) == (
                    os.getpid(), NetworkMode.ALLOWLIST, 1, 0)
                change = await asyncio.to_thread(client.set_policy, policy=policy("open", "10.0.0.0/8:22"))
                assert (change.policy.mode, change.policy.render(), change.cut) == (NetworkMode.OPEN,
                                                                                   ("10.0.0.0/8:22",), 1)
                assert proxy.policy.mode is NetworkMode.OPEN
                writer.close()
        assert not client.socket_path.exists()

    asyncio.run(scenario())


def test_subscribe_streams_the_last_records_then_new_ones(tmp_path: Path) -> None:
    async def scenario() -> None:
        proxy = make_proxy(policy("off"))
        async with controlled(tmp_path, proxy) as client:
            for n in range(3):
                await open_tunnel(proxy.tcp_port, f"old{n}.example:443")
            await until(lambda: len(proxy.decisions.recent(last=10)) == 3)
            stream = await asyncio.to_thread(client.subscribe, last=2)
            with stream:
                first = await asyncio.to_thread(stream.next, timeout=10)
                second = await asyncio.to_thread(stream.next, timeout=10)
                assert [first.host, second.host] == ["old1.example", "old2.example"]  # type: ignore[union-attr]
                await open_tunnel(proxy.tcp_port, "fresh.example:443")
                fresh = await asyncio.to_thread(stream.next, timeout=10)
                assert fresh is not None
                assert (fresh.host, fresh.port, fresh.decision.rule, fresh.outcome) == (
                    "fresh.example", 443, "mode:off", Outcome.DENIED)

    asyncio.run(scenario())


def test_an_approver_on_the_control_socket_answers_held_requests(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with echo_server() as port:
            proxy = make_proxy(policy("allowlist"), resolver=StubResolver({"ask.example": ["151.101.0.9"]}),
                               connector=LoopbackConnector({("151.101.0.9", 443): port}),
                               approvals=ApprovalBroker(timeout=20))
            async with controlled(tmp_path, proxy) as client:
                approvals = await asyncio.to_thread(client.approvals)
                with approvals:
                    await until(lambda: proxy.approvals.has_approvers)
                    held = asyncio.create_task(open_tunnel(proxy.tcp_port, "ask.example:443"))
                    request = await asyncio.to_thread(approvals.next_request, timeout=10)
                    assert request is not None and (request.host, request.port) == ("ask.example", 443)
                    assert await asyncio.to_thread(
                        approvals.answer, request_id=request.id, verdict=ApprovalVerdict.ALLOW_ALWAYS)
                    status, _, _, writer = await held
                    assert status == 200
                    writer.close()
                    assert not await asyncio.to_thread(
                        approvals.answer, request_id=request.id, verdict=ApprovalVerdict.DENY)
                    assert (await asyncio.to_thread(approvals.next_request, timeout=0.05)) is None
                assert (await asyncio.to_thread(client.get_policy)).render() == ("ask.example:443",)
                await until(lambda: not proxy.approvals.has_approvers)  # closing the stream unsubscribes

    asyncio.run(scenario())


def test_a_bad_policy_is_refused_as_invalid_input_and_changes_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        proxy = make_proxy(policy("allowlist", "example.com"))
        async with controlled(tmp_path, proxy) as client:
            raw = _raw(client.socket_path, {"op": "set_policy", "policy": {"mode": "allowlist",
                                                                         "allowlist": ["http://x"]}})
            answer = await asyncio.to_thread(raw)
            assert answer["ok"] is False and answer["kind"] == "invalid_input"
            assert "not a URL" in answer["error"] and "*.example.com" in answer["hint"]
            with pytest.raises(InvalidInput, match="invalid network mode"):
                await asyncio.to_thread(_set_raw_mode, client, "sometimes")
            assert proxy.policy.render() == ("example.com",)

    asyncio.run(scenario())


def test_malformed_control_lines_are_answered_and_the_connection_keeps_working(tmp_path: Path) -> None:
    async def scenario() -> None:
        proxy = make_proxy(policy("off"))
        async with controlled(tmp_path, proxy) as client:
            def exchange() -> list[dict[str, object]]:
                with socket.socket(socket.AF_UNIX) as sock:
                    sock.settimeout(10)
                    sock.connect(str(client.socket_path))
                    sock.sendall(b"not json\n[1,2]\n{\"op\": \"fly\"}\n{\"op\": \"get_policy\"}\n")
                    reader = sock.makefile("rb")
                    return [json.loads(reader.readline()) for _ in range(4)]

            answers = await asyncio.to_thread(exchange)
        assert [a["ok"] for a in answers] == [False, False, False, True]
        assert "not valid JSON" in str(answers[0]["error"]) and "unknown control operation" in str(answers[2]["error"])
        assert answers[3]["policy"] == {"mode": "off", "allowlist": []}

    asyncio.run(scenario())


def test_the_client_says_when_the_proxy_is_not_running(tmp_path: Path) -> None:
    client = EgressControlClient(socket_path=tmp_path / "absent.sock", timeout=1)
    with pytest.raises(EgressError, match="the egress proxy is not running") as caught:
        client.status()
    assert caught.value.hint


def test_the_client_times_out_on_a_silent_peer(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX) as silent:
        silent.bind(str(path))
        silent.listen()
        client = EgressControlClient(socket_path=path, timeout=0.2)
        with pytest.raises(EgressError, match="did not answer within 0.2 s"):
            client.get_policy()


def _raw(path: Path, message: dict[str, object]):  # type: ignore[no-untyped-def]
    def call() -> dict[str, object]:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            sock.sendall(json.dumps(message).encode() + b"\n")
            return json.loads(sock.makefile("rb").readline())

    return call


def _set_raw_mode(client: EgressControlClient, mode: str) -> None:
    client._call({"op": "set_policy", "policy": {"mode": mode, "allowlist": []}})

