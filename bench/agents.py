"""Agents: the time from create to an agent's first answer, and the credential gateway's
added latency per request.

First answer: `create --template agents --no-warm` (the cached agents layer: Claude Code,
Codex and Aider; a cold boot, as a first create without a golden state is) on qemu:///system,
then Aider, the agent whose own client the vm tests drive (tests/vm/test_agents.py), asked one
message through the gateway to the local fake provider; timed from the create's start to its
answer, with the create's part shown. The image pull is untimed. Needs root and libvirtd.

Latency: a request to the local fake provider (tests/fake_provider.py: HTTPS on 127.0.0.1
with a test CA) straight over TLS, against the same request through the real gateway process
(`python -m agentbox.gateway`, as the supervisor starts it) on its Unix socket, which swaps
the phantom token for the key and forwards over TLS. Both sides keep their connection open
(as the providers' SDKs do); median of 50 each, interleaved. The SSH forward into a guest is
not part of this figure (bench/egress.py measures that path).

Usage: PYTHONPATH=. .venv/bin/python bench/agents.py [--latency-only]
Every server is the benchmark's own, on the host's 127.0.0.1.
"""

from __future__ import annotations

import argparse
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

from agentbox.model.progress import CancelToken
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.stores.api_keys import NO_KEYRING_ENV, ApiKeyStore
from agentbox.stores.gateway_tokens import GatewayTokenFile
from _env import bench_services
from tests.fake_provider import ANSWER, fake_provider

ROUNDS = 50
KEY = "sk-ant-bench-key"
BODY = json.dumps({"model": "claude-bench", "max_tokens": 8, "messages": []})
AIDER = ("cd /tmp && timeout 900 aider --model openai/gpt-4o-mini --no-stream --no-git --yes-always --no-pretty "
         "--no-show-model-warnings --no-check-update --no-analytics --message 'say hello' </dev/null")


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


def first_answer() -> None:
    os.environ[NO_KEYRING_ENV] = "1"  # the supervisor's gateway inherits it: the bench's key file
    with tempfile.TemporaryDirectory(prefix="ab-bench-agent-", dir="/tmp") as tmp, \
            fake_provider(key=KEY, ca_path=Path(tmp) / "ca.pem") as fake, \
            bench_services(template="agents",
                           egress_hosts={"api.anthropic.com": "127.0.0.1", "api.openai.com": "127.0.0.1"},
                           settings=f"gateway_ca_bundle: {fake.ca_path}\ngateway_upstream_port: {fake.port}\n"
                           ) as (services, ctx):
        ApiKeyStore(config_dir=ctx.paths.config_dir).set(provider="openai", key=KEY)
        started = time.monotonic()
        create_workspace(ctx=ctx, request=CreateRequest(name="agent", template="agents", warm=False),
                         on_progress=lambda _: None, cancel=CancelToken())
        created = time.monotonic()
        out = bytearray()
        result = services.workspaces.exec(name="agent", argv=["bash", "-lc", AIDER], stdout=out.extend,
                                          stderr=out.extend)
        answered = time.monotonic()
        if result.exit_code != 0 or ANSWER not in out.decode(errors="replace"):
            raise SystemExit(f"aider did not answer (exit {result.exit_code}):\n{out.decode(errors='replace')}")
        if not any(seen.path.endswith("/chat/completions") for seen in fake.seen):
            raise SystemExit("the fake provider saw no chat request")
    print(f"create --template agents (cold) to Aider's first answer through the gateway: {answered - started:.1f} s")
    print(f"  create                     {created - started:7.1f} s")
    print(f"  aider, one message         {answered - created:7.1f} s  (start-up under this machine's accel)")


def latency() -> None:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-only", action="store_true", help="skip the create (no root or libvirt needed)")
    args = parser.parse_args()
    latency()
    if not args.latency_only:
        first_answer()


if __name__ == "__main__":
    main()
