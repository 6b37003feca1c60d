"""Agents in one run: the credential gateway's added latency per request.

A request to the local fake provider (tests/fake_provider.py: HTTPS on 127.0.0.1 with a
test CA) straight over TLS, against the same request through the real gateway process
(`python -m agentbox.gateway`, as the supervisor starts it) on its Unix socket, which swaps
the phantom token for the key and forwards over TLS. Both sides keep their connection open
(as the providers' SDKs do); median of 50 each, interleaved. The SSH forward into a guest is
not part of this figure (bench/egress.py measures that path).

TODO: the other half of the issue's figure, the time from `agentbox create --template
claude-code` to the agent answering its first request through the gateway, needs the agent
image (the `agents` helper's templates); add it here once `agentbox agent` exists.

Usage: PYTHONPATH=. .venv/bin/python bench/agents.py
Every server is the benchmark's own, on the host's 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.fake_provider

from agentbox.stores.api_keys import NO_KEYRING_ENV, ApiKeyStore
from agentbox.stores.gateway_tokens import GatewayTokenFile
from tests.fake_provider import fake_provider

ROUNDS = 50
KEY = "sk-ant-bench-key"
BODY = json.dumps({"model": "claude-bench", "max_tokens": 8, "messages": []})


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("127.0.0.1", 3129, timeout=30)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(self._path))


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """api.anthropic.com's name and certificate check, on 127.0.0.1 (the fake's port)."""

    def __init__(self, port: int, context: object) -> None:
        super().__init__("api.anthropic.com", port, timeout=30, context=context)  # type: ignore[arg-type]
        self._real_port = port

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self._real_port), timeout=30)
        # As aiohttp (the gateway's client) does: no Nagle delay between headers and body.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _one(conn: http.client.HTTPConnection, key_header: str) -> float:
    started = time.perf_counter()
    conn.request("POST", conn.path_prefix + "/v1/messages", body=BODY,  # type: ignore[attr-defined]
                 headers={"x-api-key": key_header, "content-type": "application/json"})
    response = conn.getresponse()
    response.read()
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise SystemExit(f"request failed: HTTP {response.status}")
    return elapsed


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ab-bench-gw-", dir="/tmp") as tmp:
        root = Path(tmp)
        os.environ[NO_KEYRING_ENV] = "1"
        with fake_provider(key=KEY, ca_path=root / "ca.pem") as fake:
            ApiKeyStore(config_dir=root / "config").set(provider="anthropic", key=KEY)
            token = GatewayTokenFile(path=root / "token.json").mint(workspace="bench")
            (root / "policy.json").write_text(json.dumps({"mode": "open", "allowlist": []}))
            sock, pid = root / "gw.sock", root / "gw.pid"
            gateway = subprocess.Popen(
                [sys.executable, "-m", "agentbox.gateway", "--workspace", "bench", "--socket", str(sock),
                 "--token-file", str(root / "token.json"), "--usage-file", str(root / "usage.json"),
                 "--policy-file", str(root / "policy.json"), "--config-dir", str(root / "config"),
                 "--audit-log", str(root / "audit.jsonl"), "--pid-file", str(pid),
                 "--pin", "api.anthropic.com=127.0.0.1", "--ca-bundle", str(fake.ca_path),
                 "--upstream-port", str(fake.port)], stderr=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + 30
                while not pid.exists():
                    if time.monotonic() > deadline or gateway.poll() is not None:
                        raise SystemExit("the gateway did not start")
                    time.sleep(0.05)
                direct = _PinnedHTTPSConnection(fake.port, fake.client_context())
                direct.path_prefix = ""  # type: ignore[attr-defined]
                through = _UnixHTTPConnection(sock)
                through.path_prefix = "/anthropic"  # type: ignore[attr-defined]
                _one(direct, KEY), _one(through, token.token)  # warm: TLS handshakes, imports
                plain, gated = [], []
                for _ in range(ROUNDS):
                    plain.append(_one(direct, KEY))
                    gated.append(_one(through, token.token))
                direct.close()
                through.close()
            finally:
                gateway.terminate()
                gateway.wait(timeout=10)
    p, g = statistics.median(plain), statistics.median(gated)
    print(f"one API request to the local fake provider (kept-alive connections), median of {ROUNDS} interleaved:")
    print(f"  direct TLS                 {p * 1000:7.2f} ms")
    print(f"  through the gateway        {g * 1000:7.2f} ms  (+{(g - p) * 1000:.2f} ms per request)")
    print(f"  gateway / direct = {g / p:.2f}")
    print("create --template claude-code to the agent's first answer: TODO (needs the agent image)")


if __name__ == "__main__":
    main()
