"""Network isolation from inside a real guest. The only servers are the test's own, on the
host's 127.0.0.1; the guest reaches them (when allowed) only through agentbox's proxy, by
the name the test settings pin to 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agentbox.cli.main import main
from agentbox.model.progress import CancelToken

from .conftest import EGRESS_TEST_HOST, VmEnv, quiet, run_in


BIG_BYTES = 16 << 20  # the /big download
BIG_SENT: list[int] = []  # per /big request: the bytes the server got out before the end


class HelloHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/big":  # 16 MiB, paced so that a cut lands mid-transfer
            self.send_response(200)
            self.send_header("Content-Length", str(BIG_BYTES))
            self.end_headers()
            sent, chunk = 0, b"x" * (64 << 10)
            try:
                while sent < BIG_BYTES:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    sent += len(chunk)
                    time.sleep(0.02)
            except OSError:
                pass
            BIG_SENT.append(sent)
            return
        if self.path == "/slow":  # a long download: one line every 0.2 s for a minute
            self.send_response(200)
            self.end_headers()
            try:
                for index in range(300):
                    self.wfile.write(f"line {index}\n".encode())
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass
            return
        body = f"hello from {self.server.server_address[1]}\n".encode()  # type: ignore[index]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[int, int]]:
    """Two HTTP servers on the host's 127.0.0.1: one the tests allow, one they never do."""
    made = [ThreadingHTTPServer(("127.0.0.1", 0), HelloHandler) for _ in range(2)]
    for server in made:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield made[0].server_address[1], made[1].server_address[1]
    for server in made:
        server.shutdown()


def curl(env: VmEnv, name: str, port: int, path: str = "/") -> tuple[int, str]:
    # Plain curl: the guest's own configuration (http_proxy from /etc/environment) routes it.
    code, out, err = run_in(env, name, "curl", "-sS", "-m", "20", f"http://{EGRESS_TEST_HOST}:{port}{path}")
    return code, out + err


def net(env: VmEnv, *words: str) -> None:
    assert main(["net", *words]) == 0


@pytest.fixture()
def ws(vm_env: VmEnv, clean_workspace: str, monkeypatch: pytest.MonkeyPatch,
       servers: tuple[int, int]) -> str:
    vm_env.cli_env(monkeypatch)
    net(vm_env, clean_workspace, "allowlist")
    net(vm_env, "allow", clean_workspace, f"127.0.0.1:{servers[0]}")
    return clean_workspace


def test_an_allowed_destination_works_through_the_proxy(vm_env: VmEnv, ws: str, servers: tuple[int, int]) -> None:
    code, out = curl(vm_env, ws, servers[0])
    assert (code, out) == (0, f"hello from {servers[0]}\n")
    [record] = [r for r in vm_env.services().network.records(name=ws) if r.port == servers[0]][-1:]
    assert record.decision.allowed and record.address == "127.0.0.1" and record.host == EGRESS_TEST_HOST


def test_an_unlisted_destination_is_refused_and_logged(vm_env: VmEnv, ws: str, servers: tuple[int, int]) -> None:
    code, out = curl(vm_env, ws, servers[1])
    assert code != 0 or "403" in out or "denied" in out
    assert f"hello from {servers[1]}" not in out
    [record] = [r for r in vm_env.services().network.records(name=ws) if r.port == servers[1]][-1:]
    assert not record.decision.allowed


def test_off_blocks_everything(vm_env: VmEnv, ws: str, servers: tuple[int, int]) -> None:
    net(vm_env, ws, "off")
    code, out = curl(vm_env, ws, servers[0])
    assert "hello" not in out


def test_a_live_switch_applies_to_the_next_request_and_cuts_an_open_download(
        vm_env: VmEnv, ws: str, servers: tuple[int, int]) -> None:
    start = run_in(vm_env, ws, "sh", "-c",
                   f"(setsid curl -sS -N -m 90 http://{EGRESS_TEST_HOST}:{servers[0]}/slow > /tmp/slow 2>&1 &) ;"
                   " sleep 3; wc -l < /tmp/slow")
    assert int(start[1].split()[-1]) > 3  # the download is flowing
    net(vm_env, ws, "off")
    time.sleep(3)
    code, out, _ = run_in(vm_env, ws, "sh", "-c", "pgrep -x curl || echo gone; wc -l < /tmp/slow")
    first = out.split()
    time.sleep(2)
    code, out, _ = run_in(vm_env, ws, "sh", "-c", "wc -l < /tmp/slow")
    assert first[0] == "gone" and int(out) == int(first[-1])  # cut, and nothing arrives any more
    assert "hello" not in curl(vm_env, ws, servers[0])[1]
    net(vm_env, ws, "allowlist")
    assert curl(vm_env, ws, servers[0])[0] == 0


def test_the_host_and_qemus_dns_are_unreachable_directly(vm_env: VmEnv, ws: str, servers: tuple[int, int]) -> None:
    code, out, _ = run_in(vm_env, ws, "sh", "-c",
                          f"curl --noproxy '*' -sS -m 5 http://10.0.2.2:{servers[0]}/ || echo host-refused;"
                          " getent hosts agentbox-probe.test || echo dns-refused")
    assert "host-refused" in out and "dns-refused" in out and "hello" not in out


def test_the_policy_survives_reset_and_stop_start(vm_env: VmEnv, ws: str, servers: tuple[int, int]) -> None:
    services = vm_env.services()
    services.snapshots.reset(name=ws, on_progress=quiet, cancel=CancelToken())
    assert curl(vm_env, ws, servers[0])[0] == 0
    services.workspaces.stop(name=ws, force=True, on_progress=quiet, cancel=CancelToken())
    services.workspaces.start(name=ws, on_progress=quiet, cancel=CancelToken())
    assert curl(vm_env, ws, servers[0]) == (0, f"hello from {servers[0]}\n")
    assert services.network.policy(name=ws).render() == (f"127.0.0.1:{servers[0]}",)
    # Every decision the guest's traffic made is in the hash-chained trail, whose head the
    # reset and the stop noted in the audit log: `audit verify` covers it.
    trail = services.audit.verify_trail(name=ws)
    assert trail.intact and trail.heads >= 2 and trail.result is not None and trail.result.records >= 2


def test_an_egress_budget_cuts_a_download_mid_transfer_and_ends_the_session(
        vm_env: VmEnv, ws: str, servers: tuple[int, int]) -> None:
    services = vm_env.services()
    assert main(["budget", ws, "--egress", "2M"]) == 0
    try:
        session = services.sessions.start(name=ws, max_minutes=None, on_progress=quiet, cancel=CancelToken())
        run_in(vm_env, ws, "sh", "-c", f"(setsid curl -sS -m 120 -o /tmp/big "
                                       f"http://{EGRESS_TEST_HOST}:{servers[0]}/big > /tmp/big.log 2>&1 &)")
        deadline = time.monotonic() + 300
        while services.sessions.current(name=ws) is not None and time.monotonic() < deadline:
            time.sleep(1)
        assert services.sessions.current(name=ws) is None  # the supervisor ended it
        # The proxy cut the live download once 2 MB had gone through, far short of 16 MiB.
        [big] = [r for r in services.network.records(name=ws) if r.port == servers[0]][-1:]
        assert big.outcome.value == "cut" and "budget:egress_bytes" in big.error
        assert 2_000_000 <= big.bytes_up + big.bytes_down < 2_000_000 + (1 << 20)
        assert BIG_SENT and BIG_SENT[-1] < BIG_BYTES
        records = list(services.audit.records(name=ws))
        [exceeded] = [r for r in records if r.event == "budget.exceeded" and r.details["session"] == session.id]
        assert exceeded.details["budget"] == "egress_bytes" and exceeded.details["limit"] == 2_000_000
        assert exceeded.details["used"] >= 2_000_000 and exceeded.details["action"] == "end"
        [ended] = [r for r in records if r.event == "session.ended" and r.details["session"] == session.id]
        assert "egress_bytes" in ended.details["reason"] and ended.details["reset"] is not None
        receipt = services.receipts.get(name=ws, receipt_id=session.id).receipt
        [line] = receipt.budgets
        assert line.budget == "egress_bytes" and line.exceeded
        # The next session has a budget of its own: the proxy lets the guest out again.
        services.sessions.start(name=ws, max_minutes=None, on_progress=quiet, cancel=CancelToken())
        assert curl(vm_env, ws, servers[0]) == (0, f"hello from {servers[0]}\n")
        services.sessions.end(name=ws, reason="test", on_progress=quiet, cancel=CancelToken(), reset=False)
    finally:
        assert main(["budget", ws, "--egress", "0"]) == 0


def test_a_disk_write_budget_ends_the_session_from_libvirts_block_stats(vm_env: VmEnv, ws: str) -> None:
    services = vm_env.services()
    assert main(["budget", ws, "--disk-writes", "20M"]) == 0
    try:
        session = services.sessions.start(name=ws, max_minutes=None, on_progress=quiet, cancel=CancelToken())
        run_in(vm_env, ws, "sh", "-c", "(setsid dd if=/dev/zero of=/home/agent/fill bs=1M count=200 oflag=direct"
                                       " > /dev/null 2>&1 &)")
        deadline = time.monotonic() + 300
        while services.sessions.current(name=ws) is not None and time.monotonic() < deadline:
            time.sleep(1)
        assert services.sessions.current(name=ws) is None
        [exceeded] = [r for r in services.audit.records(name=ws)
                      if r.event == "budget.exceeded" and r.details["session"] == session.id]
        assert exceeded.details["budget"] == "disk_write_bytes" and exceeded.details["used"] >= 20_000_000
    finally:
        assert main(["budget", ws, "--disk-writes", "0"]) == 0
