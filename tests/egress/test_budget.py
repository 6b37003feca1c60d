"""The session's egress byte budget, enforced by the real proxy on 127.0.0.1 as it relays."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agentbox.egress.budget import EgressBudget, read_egress_use
from agentbox.egress.records import ConnectionRecord, DecisionLog, Outcome
from tests.egress.conftest import (
    closed_by_peer,
    echo_server,
    echo_through,
    make_proxy,
    open_tunnel,
    policy,
    running_proxy,
    until,
)

pytestmark = pytest.mark.timeout(60)


def _session(path: Path, session_id: str, limit: int) -> None:
    path.write_text(json.dumps({"id": session_id, "name": "w", "started": "x", "egress_bytes": limit}))


def test_the_budget_cuts_live_tunnels_mid_transfer_and_refuses_new_ones(tmp_path: Path) -> None:
    session_file, usage_file = tmp_path / "session.json", tmp_path / "egress-usage.json"
    _session(session_file, "s1", 100_000)
    records: list[ConnectionRecord] = []

    async def scenario() -> None:
        async with echo_server() as port:
            proxy = make_proxy(policy("allowlist", f"127.0.0.1:{port}"), decisions=DecisionLog(sink=records.append),
                               budget=EgressBudget(session_file=session_file, usage_file=usage_file))
            async with running_proxy(proxy):
                _, _, idle_reader, _idle = await open_tunnel(proxy.tcp_port, f"127.0.0.1:{port}")
                _, _, reader, writer = await open_tunnel(proxy.tcp_port, f"127.0.0.1:{port}")
                assert await echo_through(reader, writer, b"x" * 40_000) == b"x" * 40_000  # 80 000 both ways
                writer.write(b"y" * 40_000)  # crosses 100 000 on the way
                await writer.drain()
                assert await closed_by_peer(reader)
                assert await closed_by_peer(idle_reader)  # every live connection goes, not only the one counting
                status, body, _, _ = await open_tunnel(proxy.tcp_port, f"127.0.0.1:{port}")
                assert status == 403 and b"budget:egress_bytes" in body and b"egress budget is used up" in body
                await until(lambda: len(records) == 3)

    asyncio.run(scenario())
    cut = [r for r in records if r.outcome is Outcome.CUT]
    assert len(cut) == 2 and all(r.error.startswith("budget:egress_bytes: this session's egress budget") for r in cut)
    refused = [r for r in records if r.outcome is Outcome.DENIED]
    assert [r.decision.rule for r in refused] == ["budget:egress_bytes"]
    use = read_egress_use(path=usage_file)
    assert use is not None and use.session == "s1" and use.exceeded and 100_000 <= use.bytes < 160_000


def test_a_new_session_starts_from_zero_and_no_session_means_no_budget(tmp_path: Path) -> None:
    session_file, usage_file = tmp_path / "session.json", tmp_path / "egress-usage.json"
    _session(session_file, "s1", 10)

    async def scenario() -> None:
        async with echo_server() as port:
            proxy = make_proxy(policy("allowlist", f"127.0.0.1:{port}"),
                               budget=EgressBudget(session_file=session_file, usage_file=usage_file))
            async with running_proxy(proxy):
                _, _, reader, writer = await open_tunnel(proxy.tcp_port, f"127.0.0.1:{port}")
                writer.write(b"z" * 100)
                await writer.drain()
                assert await closed_by_peer(reader)
                assert (await open_tunnel(proxy.tcp_port, f"127.0.0.1:{port}"))[0] == 403
                _session(session_file, "s2", 1_000_000)  # the next session: its own budget
                status, _, reader, writer = await open_tunnel(proxy.tcp_port, f"127.0.0.1:{port}")
                assert status == 200 and await echo_through(reader, writer, b"again") == b"again"
                writer.close()
                session_file.unlink()  # between sessions: nothing to enforce
                status, _, reader, writer = await open_tunnel(proxy.tcp_port, f"127.0.0.1:{port}")
                assert status == 200 and await echo_through(reader, writer, b"w" * 2_000_000) == b"w" * 2_000_000
                writer.close()

    asyncio.run(scenario())


def test_a_restarted_proxy_keeps_the_sessions_count(tmp_path: Path) -> None:
    session_file, usage_file = tmp_path / "session.json", tmp_path / "egress-usage.json"
    _session(session_file, "s1", 1000)
    first = EgressBudget(session_file=session_file, usage_file=usage_file)
    first.add(1500)
    again = EgressBudget(session_file=session_file, usage_file=usage_file)
    assert again.refusal() is not None and again.used == 1500


def test_a_raised_limit_lets_the_same_session_go_on(tmp_path: Path) -> None:
    session_file, usage_file = tmp_path / "session.json", tmp_path / "egress-usage.json"
    _session(session_file, "s1", 1000)
    budget = EgressBudget(session_file=session_file, usage_file=usage_file)
    budget.add(1500)
    assert budget.refusal() is not None
    _session(session_file, "s1", 100_000)  # `agentbox budget w --egress 100k --resume`
    assert budget.refusal() is None and budget.used == 1500  # the session's count goes on
    budget.add(100_000)
    assert budget.refusal() is not None
    use = read_egress_use(path=usage_file)
    assert use is not None and use.exceeded and use.bytes == 101_500
