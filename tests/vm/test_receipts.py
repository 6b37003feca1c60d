"""A session's receipt on a real guest: the commands it ran, the destinations it reached and
was refused (the test's own servers on the host's 127.0.0.1, by the pinned name), what it
left in the outbox and what the guest says it changed; and the audit log still verifies."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from agentbox.cli.main import main

from .conftest import EGRESS_TEST_HOST, VmEnv, run_in
from .test_network import curl, net, servers  # noqa: F401 - servers is a fixture used here

UNTRUSTED = "reported by the guest (untrusted)"


def cli_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> object:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def wait_for_decisions(env: VmEnv, name: str, ports: set[int]) -> None:
    """The proxy appends a decision when the connection closes, on its own thread: wait for both."""
    deadline = time.monotonic() + 30
    while {r.port for r in env.services().network.records(name=name)} & ports != ports:
        assert time.monotonic() < deadline, "the proxy did not log both connections"
        time.sleep(0.5)


def test_a_session_receipt_lists_what_the_session_did(vm_env: VmEnv, clean_workspace: str,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str],
                                                      servers: tuple[int, int]) -> None:  # noqa: F811
    ws, (allowed, denied) = clean_workspace, servers
    vm_env.cli_env(monkeypatch)
    net(vm_env, ws, "allowlist")
    net(vm_env, "allow", ws, f"127.0.0.1:{allowed}")
    tag = f"receipt-{uuid.uuid4().hex[:6]}"
    assert main(["session", "start", ws]) == 0

    assert curl(vm_env, ws, allowed) == (0, f"hello from {allowed}\n")
    code, out = curl(vm_env, ws, denied)
    assert f"hello from {denied}" not in out
    assert run_in(vm_env, ws, "sh", "-c", f"echo result > /mnt/outbox/{tag}.txt && echo notes > ~/{tag}-notes")[0] == 0
    assert run_in(vm_env, ws, "false")[0] == 1
    wait_for_decisions(vm_env, ws, {allowed, denied})
    capsys.readouterr()

    assert main(["session", "end", ws]) == 0
    shown = capsys.readouterr().out
    assert f"files changed in the guest since the clean snapshot, {UNTRUSTED}" in shown
    assert f"/home/agent/{tag}-notes" in shown and "back to clean" in shown

    [*_, summary] = cli_json(["receipts", ws, "--json"], capsys)  # type: ignore[misc]
    stored = cli_json(["receipt", ws, summary["id"], "--json"], capsys)
    assert isinstance(stored, dict) and stored["integrity"] == "matches"
    receipt = stored["receipt"]
    commands = [(c["argv"], c["exit_code"]) for c in receipt["commands"]]
    assert (["curl", "-sS", "-m", "20", f"http://{EGRESS_TEST_HOST}:{allowed}/"], 0) in commands
    assert (["false"], 1) in commands
    curl_allowed = next(c for c in receipt["commands"] if c["argv"][-1].endswith(f":{allowed}/"))
    assert curl_allowed["stdout_bytes"] == len(f"hello from {allowed}\n") and curl_allowed["duration_s"] > 0
    network = {(d["host"], d["port"]): d for d in receipt["network"]}
    assert network[(EGRESS_TEST_HOST, allowed)]["allowed"] and network[(EGRESS_TEST_HOST, allowed)]["bytes_down"] > 0
    assert not network[(EGRESS_TEST_HOST, denied)]["allowed"]
    assert network[(EGRESS_TEST_HOST, denied)]["connections"] >= 1
    assert {"path": f"{tag}.txt", "change": "added", "kind": "file", "size": len("result\n")} \
        in receipt["outbox"]["changes"]
    guest = receipt["guest"]
    assert guest["status"] == "reported" and guest["source"] == UNTRUSTED and not guest["truncated"]
    assert f"/home/agent/{tag}-notes" in {f["path"] for f in guest["files"]}
    assert f"/mnt/outbox/{tag}.txt" not in {f["path"] for f in guest["files"]}  # the outbox is the host's to list
    with capsys.disabled():  # for whoever runs this with -s: what a real receipt looks like
        print("\n" + shown, flush=True)

    assert main(["audit", "verify", ws]) == 0
    assert "intact" in capsys.readouterr().out
    # The receipt was taken before the reset; the reset then removed what it lists.
    assert run_in(vm_env, ws, "sh", "-c", f"test -e ~/{tag}-notes && echo still || echo gone")[1].strip() == "gone"
