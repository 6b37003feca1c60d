"""The credential gateway from inside a real guest: the guest's login shell has only a
phantom token and base URLs; a request through 127.0.0.1:3129 reaches the local fake
provider (api.anthropic.com pinned to 127.0.0.1, TLS from a test CA) with the real key,
which never appears in the guest's files, environment or processes; `net off` cuts it; the
audit log has the request without the key; a token of an ended state is dead after a reset.
"""

from __future__ import annotations

import secrets
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agentbox.audit import read_records
from agentbox.model.progress import CancelToken
from agentbox.host.supervision_files import SupervisorFiles
from agentbox.services.gateway_access import GUEST_PROFILE, GatewayAccess
from agentbox.stores.gateway_tokens import GatewayTokenFile
from tests.fake_provider import ANSWER, FakeProvider
from tests.vm.conftest import VmEnv, quiet, run_in
from tests.vm.gateway_env import provider_for_guests

NAME = "gw"
SECRET_PART = secrets.token_hex(12)
REAL_KEY = f"sk-ant-vmtest-{SECRET_PART}"
# Matches the key without containing it: the grep's own command line (in `ps`) stays clean.
KEY_PATTERN = f"sk-ant-vmtest-[{SECRET_PART[0]}]{SECRET_PART[1:]}"

_REQUEST = (  # as an agent's client does it: base URL and key from the login shell's environment
    'curl -sS -o /tmp/answer -w "%{http_code}" -X POST "$ANTHROPIC_BASE_URL/v1/messages"'
    ' -H "x-api-key: $ANTHROPIC_API_KEY" -H "anthropic-version: 2023-06-01" -H "content-type: application/json"'
    ' -d \'{"model": "claude-vm-test", "max_tokens": 8, "messages": []}\'; echo; cat /tmp/answer')


@pytest.fixture(scope="module")
def gateway_ws(vm_env: VmEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FakeProvider]]:
    with provider_for_guests(vm_env, root=tmp_path_factory.mktemp("gateway"), key=REAL_KEY) as fake:
        try:
            vm_env.create(NAME, network="allowlist", warm=True)  # the shared guest's golden state
            yield NAME, fake
        finally:
            vm_env.services().workspaces.destroy(name=NAME, on_progress=quiet)


def _ask(env: VmEnv, name: str, *, token: str | None = None, url: str | None = None) -> tuple[int, str]:
    command = _REQUEST if token is None else f"export ANTHROPIC_API_KEY={token}; {_REQUEST}"
    if url is not None:
        command = command.replace("$ANTHROPIC_BASE_URL/v1/messages", url)
    code, out, err = run_in(env, name, "bash", "-lc", command)
    assert code == 0, err
    status, _, body = out.partition("\n")
    return int(status), body


def test_a_guest_request_reaches_the_provider_with_the_real_key(
        vm_env: VmEnv, gateway_ws: tuple[str, FakeProvider]) -> None:
    name, fake = gateway_ws
    code, env_out, _ = run_in(vm_env, name, "bash", "-lc", "env")
    assert code == 0
    assert "ANTHROPIC_BASE_URL=http://127.0.0.1:3129/anthropic" in env_out
    assert "ANTHROPIC_API_KEY=sk-agentbox-phantom-" in env_out
    assert "OPENAI_BASE_URL=http://127.0.0.1:3129/openai/v1" in env_out
    status, body = _ask(vm_env, name)
    assert status == 200, body
    assert ANSWER in body
    assert fake.seen and fake.seen[-1].header("x-api-key") == REAL_KEY
    assert REAL_KEY not in env_out and REAL_KEY not in body


def test_the_real_key_is_nowhere_in_the_guest(vm_env: VmEnv, gateway_ws: tuple[str, FakeProvider]) -> None:
    name, _ = gateway_ws
    assert _ask(vm_env, name)[0] == 200  # a request has just gone through
    code, out, err = run_in(vm_env, name, "sudo", "grep", "-rlE", KEY_PATTERN, "/home", "/etc", "/root", "/tmp")
    assert code == 1, f"grep found the key (or failed): {out} {err}"  # 1: no match anywhere
    code, out, _ = run_in(vm_env, name, "sudo", "ps", "auxeww")
    assert code == 0 and "sshd" in out
    assert REAL_KEY not in out
    code, out, _ = run_in(vm_env, name, "stat", "-c", "%a %U", GUEST_PROFILE)
    assert out.split() == ["644", "root"]


def test_net_off_cuts_the_gateway(vm_env: VmEnv, gateway_ws: tuple[str, FakeProvider]) -> None:
    name, fake = gateway_ws
    network = vm_env.services().network
    seen = len(fake.seen)
    network.set_mode(name=name, mode="off")
    try:
        status, body = _ask(vm_env, name)
        assert status == 403 and "network is off" in body
        assert len(fake.seen) == seen
    finally:
        network.set_mode(name=name, mode="allowlist")
    assert _ask(vm_env, name)[0] == 200


def test_the_audit_log_has_the_request_but_not_the_key(vm_env: VmEnv, gateway_ws: tuple[str, FakeProvider]) -> None:
    name, _ = gateway_ws
    assert _ask(vm_env, name)[0] == 200
    log = vm_env.paths.audit_log(name)
    records = [r.details for r in read_records(path=log) if r.event == "gateway.request"]
    ok = [r for r in records if r.get("status") == 200 and r.get("path") == "/v1/messages"]
    assert ok and ok[-1]["model"] == "claude-vm-test" and ok[-1]["provider"] == "anthropic"
    assert ok[-1]["tokens"] == 15
    assert any(r.get("status") == 403 for r in records)  # the refusal while off is there too
    assert REAL_KEY not in "".join(Path(p).read_text() for p in [log] if Path(p).exists())


def test_an_ended_states_token_is_refused_after_reset(vm_env: VmEnv, gateway_ws: tuple[str, FakeProvider]) -> None:
    name, _ = gateway_ws
    services = vm_env.services()
    session = services.sessions.start(name=name, max_minutes=None, on_progress=quiet, cancel=CancelToken())
    code, out, _ = run_in(vm_env, name, "bash", "-lc", 'printf %s "$ANTHROPIC_API_KEY"')
    old = out.strip()
    assert code == 0 and old.startswith("sk-agentbox-phantom-")
    assert _ask(vm_env, name)[0] == 200
    services.sessions.end(name=name, reason="test", on_progress=quiet, cancel=CancelToken())  # with a reset
    status, body = _ask(vm_env, name, token=old)
    assert status == 403 and "not this workspace's current session token" in body
    assert _ask(vm_env, name)[0] == 200  # the reset's own fresh token works
    receipt = services.receipts.get(name=name, receipt_id=session.id).receipt
    assert receipt.api.requests >= 1 and receipt.api.tokens >= 15


def test_another_host_and_another_workspaces_token_are_refused(
        vm_env: VmEnv, gateway_ws: tuple[str, FakeProvider], tmp_path: Path) -> None:
    name, fake = gateway_ws
    seen = len(fake.seen)
    status, body = _ask(vm_env, name, url="http://127.0.0.1:3129/other.agentbox.test/v1/messages")
    assert status == 404 and "any other host is refused" in body
    status, body = _ask(vm_env, name, url="http://127.0.0.1:3129/https://other.agentbox.test/v1/messages")
    assert status == 404
    foreign = GatewayTokenFile(path=tmp_path / "other" / "gateway-token.json").mint(workspace="other")
    status, body = _ask(vm_env, name, token=foreign.token)
    assert status == 403 and "another workspace's" in body
    assert len(fake.seen) == seen  # none of these reached the provider


def test_a_budget_cut_is_a_clear_error_in_the_guest(vm_env: VmEnv, gateway_ws: tuple[str, FakeProvider]) -> None:
    name, _ = gateway_ws
    ctx = vm_env.context()
    record = ctx.records.load(name=name)
    assert record is not None
    GatewayAccess(ctx=ctx).mint_and_install(record=replace(record, budget_requests=1))  # as a template's budget
    assert _ask(vm_env, name)[0] == 200
    status, body = _ask(vm_env, name)
    assert status == 429 and "API budget is used up: requests (1 of 1)" in body
    GatewayAccess(ctx=ctx).mint_and_install(record=record)  # back to no budget for the tests after
    assert _ask(vm_env, name)[0] == 200


def test_a_killed_gateway_cuts_the_stream_and_is_back_without_any_command(
        vm_env: VmEnv, gateway_ws: tuple[str, FakeProvider]) -> None:
    name, fake = gateway_ws
    sup = SupervisorFiles(egress_dir=vm_env.context().records.files(name=name).egress_dir)
    before = sup.read_state()
    assert before is not None and before.gateway is not None
    fake.release.clear()  # the fake sends the first half of the stream, then waits
    seen = len(fake.seen)
    result: dict[str, str] = {}

    def stream() -> None:
        stream_request = _REQUEST.replace('"max_tokens": 8', '"stream": true, "max_tokens": 8').replace(
            "curl -sS", "curl -sS -N -m 120")
        _, out, err = run_in(vm_env, name, "bash", "-lc", stream_request)
        result["out"] = out + err

    runner = threading.Thread(target=stream, daemon=True)
    runner.start()
    deadline = time.monotonic() + 120
    while len(fake.seen) == seen:  # the request has reached the provider: its stream is open
        assert time.monotonic() < deadline, "the streaming request never reached the fake provider"
        time.sleep(0.1)
    os.kill(before.gateway.pid, signal.SIGKILL)
    runner.join(timeout=100)
    assert not runner.is_alive(), "the stream must end when the gateway dies"
    assert "second half" not in result["out"]
    fake.release.set()
    deadline = time.monotonic() + 60
    while (state := sup.read_state()) is None or state.gateway in (None, before.gateway):
        assert time.monotonic() < deadline, "the supervisor did not bring the gateway back"
        time.sleep(0.1)
    assert _ask(vm_env, name)[0] == 200
