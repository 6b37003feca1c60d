"""The proxy as a process, as services will run it: `python -m agentbox.egress`."""

from __future__ import annotations

import json
import os
import signal
import socket
import socketserver
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentbox.egress.client import EgressControlClient
from agentbox.errors import EgressError
from tests.egress.conftest import policy

pytestmark = pytest.mark.timeout(60)
REPO = Path(__file__).resolve().parents[2]


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@contextmanager
def echo_server() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Files:
    proxy: Path
    control: Path
    policy: Path
    log: Path
    pid: Path


def files(tmp_path: Path) -> Files:
    return Files(proxy=tmp_path / "proxy.sock", control=tmp_path / "control.sock", policy=tmp_path / "policy.json",
                 log=tmp_path / "egress.jsonl", pid=tmp_path / "egress.pid")


def start(paths: Files) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agentbox.egress", "--proxy-socket", str(paths.proxy), "--control-socket",
         str(paths.control), "--policy-file", str(paths.policy), "--log-file", str(paths.log), "--pid-file",
         str(paths.pid)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_ready(process: subprocess.Popen[str], paths: Files) -> None:
    deadline = time.monotonic() + 20  # a guard against a hang, not a measurement
    while not paths.pid.exists():
        if process.poll() is not None:
            raise AssertionError(f"daemon exited: {process.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError("daemon did not become ready")
        time.sleep(0.02)


def decisions(log: Path) -> list[dict[str, object]]:
    """The decisions in the trail, each a record of the hash chain (seq, prev, event, details)."""
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert all(r["event"] == "network.decision" for r in records)
    return [r["details"] for r in records]


def stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=20)


def tunnel_through(path: Path, target: str, payload: bytes) -> tuple[bytes, bytes]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        if not head.startswith(b"HTTP/1.1 200"):
            return head, sock.recv(4096)
        sock.sendall(payload)
        echoed = b""
        while len(echoed) < len(payload):
            echoed += sock.recv(65536)
        return head, echoed


def test_daemon_serves_persists_its_policy_and_cleans_up_on_sigterm(tmp_path: Path) -> None:
    paths = files(tmp_path)
    with echo_server() as port:
        paths.policy.write_text(json.dumps({"mode": "allowlist", "allowlist": [f"127.0.0.1:{port}"]}))
        process = start(paths)
        try:
            wait_ready(process, paths)
            for path in (paths.proxy, paths.control, paths.log):
                assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
            client = EgressControlClient(socket_path=paths.control, timeout=10)
            assert client.status().pid == process.pid == int(paths.pid.read_text())
            head, echoed = tunnel_through(paths.proxy, f"127.0.0.1:{port}", b"from the guest")
            assert head.startswith(b"HTTP/1.1 200") and echoed == b"from the guest"
            change = client.set_policy(policy=policy("allowlist", f"127.0.0.1:{port}", "pypi.org"))
            assert change.policy.render() == (f"127.0.0.1:{port}", "pypi.org")
            assert json.loads(paths.policy.read_text()) == {"mode": "allowlist",
                                                            "allowlist": [f"127.0.0.1:{port}", "pypi.org"]}
            assert stat.S_IMODE(os.stat(paths.policy).st_mode) == 0o600
        finally:
            code = stop(process)
    assert code == 0
    assert not paths.proxy.exists() and not paths.control.exists() and not paths.pid.exists()
    records = decisions(paths.log)
    assert [(r["host"], r["port"], r["method"], r["allowed"], r["outcome"], r["bytes_up"]) for r in records] == [
        ("127.0.0.1", port, "CONNECT", True, "completed", len(b"from the guest"))]


def test_a_restarted_daemon_keeps_the_policy_it_was_given_through_control(tmp_path: Path) -> None:
    paths = files(tmp_path)
    paths.policy.write_text(json.dumps({"mode": "allowlist", "allowlist": []}))
    first = start(paths)
    try:
        wait_ready(first, paths)
        EgressControlClient(socket_path=paths.control, timeout=10).set_policy(policy=policy("off"))
    finally:
        assert stop(first) == 0
    second = start(paths)
    try:
        wait_ready(second, paths)
        client = EgressControlClient(socket_path=paths.control, timeout=10)
        assert client.get_policy() == policy("off")
        # an IP literal: this daemon uses the host's resolver, and tests never look up names
        head, body = tunnel_through(paths.proxy, "127.0.0.1:9", b"")
        assert head.startswith(b"HTTP/1.1 403") and b"mode:off" in body
    finally:
        assert stop(second) == 0
    assert [r["rule"] for r in decisions(paths.log)] == ["mode:off"]


def test_the_daemon_refuses_to_start_without_a_valid_policy_file(tmp_path: Path) -> None:
    paths = files(tmp_path)
    process = start(paths)
    _, err = process.communicate(timeout=30)
    assert process.returncode == EgressError.exit_code
    assert f"policy file {paths.policy} does not exist" in err
    paths.policy.write_text(json.dumps({"mode": "allowlist", "allowlist": ["http://nope"]}))
    process = start(paths)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2 and "not a URL or path" in err
    assert not paths.proxy.exists() and not paths.control.exists()


def test_a_second_daemon_on_the_same_sockets_is_refused(tmp_path: Path) -> None:
    paths = files(tmp_path)
    paths.policy.write_text(json.dumps({"mode": "off", "allowlist": []}))
    first = start(paths)
    try:
        wait_ready(first, paths)
        second = start(paths)
        _, err = second.communicate(timeout=30)
        assert second.returncode == EgressError.exit_code and "in use by another running process" in err
        assert EgressControlClient(socket_path=paths.control, timeout=10).status().pid == first.pid
    finally:
        assert stop(first) == 0
