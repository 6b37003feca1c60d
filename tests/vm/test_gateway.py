"""The credential gateway from inside a real guest: the guest's login shell has only a
phantom token and base URLs; a request through 127.0.0.1:3129 reaches the local fake
provider (api.anthropic.com pinned to 127.0.0.1, TLS from a test CA) with the real key,
which never appears in the guest's files, environment or processes; `net off` cuts it; the
audit log has the request without the key; a token of an ended state is dead after a reset.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentbox.audit import read_records
from agentbox.model.progress import CancelToken
from agentbox.services.gateway_access import GUEST_PROFILE
from agentbox.stores.api_keys import NO_KEYRING_ENV, ApiKeyStore
from tests.fake_provider import ANSWER, FakeProvider, fake_provider
from tests.vm.conftest import EGRESS_TEST_HOST, VmEnv, quiet, run_in

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
    root = tmp_path_factory.mktemp("gateway")
    with pytest.MonkeyPatch.context() as mp, fake_provider(key=REAL_KEY, ca_path=root / "ca.pem") as fake:
        mp.setenv(NO_KEYRING_ENV, "1")  # the supervisor (and its gateway) inherit it
        settings = vm_env.paths.settings_file
        original = settings.read_text()
        settings.write_text(original.replace(
            f"egress_hosts:\n  {EGRESS_TEST_HOST}: 127.0.0.1\n",
            f"egress_hosts:\n  {EGRESS_TEST_HOST}: 127.0.0.1\n  api.anthropic.com: 127.0.0.1\n")
            + f"gateway_ca_bundle: {fake.ca_path}\ngateway_upstream_port: {fake.port}\n")
        ApiKeyStore(config_dir=vm_env.paths.config_dir).set(provider="anthropic", key=REAL_KEY)
        try:
            vm_env.create(NAME, network="allowlist")
            yield NAME, fake
        finally:
            try:
                vm_env.services().workspaces.destroy(name=NAME, on_progress=quiet)
            finally:
                settings.write_text(original)


def _ask(env: VmEnv, name: str, *, token: str | None = None) -> tuple[int, str]:
    command = _REQUEST if token is None else f"export ANTHROPIC_API_KEY={token}; {_REQUEST}"
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
