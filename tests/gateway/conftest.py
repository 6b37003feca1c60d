"""A credential gateway for real on 127.0.0.1 (and its Unix socket), in front of the local
fake provider (tests/fake_provider.py), with a real key store, token file and audit log."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentbox.audit import read_records
from agentbox.gateway.server import CredentialGateway, GatewayOptions
from agentbox.model.api_use import ApiBudget
from agentbox.stores.api_keys import NO_KEYRING_ENV, ApiKeyStore
from agentbox.stores.gateway_tokens import GatewayToken, GatewayTokenFile
from tests.fake_provider import FakeProvider, fake_provider

REAL_KEY = "sk-ant-REAL-key-0123456789abcdef"
PINS = (("api.anthropic.com", "127.0.0.1"), ("api.openai.com", "127.0.0.1"), ("other.agentbox.test", "127.0.0.1"))


@dataclass
class Answer:
    status: int
    body: bytes

    def json(self) -> dict[str, object]:
        data = json.loads(self.body)
        assert isinstance(data, dict)
        return data

    @property
    def message(self) -> str:
        error = self.json().get("error")
        return str(error.get("message")) if isinstance(error, dict) else ""


class Harness:
    def __init__(self, *, root: Path, fake: FakeProvider) -> None:
        self.root = root
        self.fake = fake
        self.config_dir = root / "config"
        self.tokens = GatewayTokenFile(path=root / "ws" / "gateway-token.json")
        self.policy = root / "ws" / "policy.json"
        self.audit_log = root / "audit.jsonl"
        self.socket = root / "gw.sock"
        self.set_mode("open")
        self.token = self.tokens.mint(workspace="ws", session="s1")
        self.keys = ApiKeyStore(config_dir=self.config_dir, use_keyring=False)
        self.keys.set(provider="anthropic", key=REAL_KEY)
        self.keys.set(provider="openai", key=REAL_KEY)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._gateway: CredentialGateway | None = None
        self.port = 0

    def start(self) -> None:
        self._thread.start()
        self._gateway = CredentialGateway(options=GatewayOptions(
            workspace="ws", socket_path=self.socket, token_file=self.tokens.path,
            usage_file=self.root / "ws" / "usage.json", policy_file=self.policy, config_dir=self.config_dir,
            audit_log=self.audit_log, pins=PINS, extra_ca=self.fake.ca_path, upstream_port=self.fake.port,
            tcp_port=0))
        asyncio.run_coroutine_threadsafe(self._gateway.start(), self._loop).result(timeout=30)
        assert self._gateway.tcp_port
        self.port = self._gateway.tcp_port

    def stop(self) -> None:
        if self._gateway is not None:
            asyncio.run_coroutine_threadsafe(self._gateway.close(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    def set_mode(self, mode: str) -> None:
        self.policy.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.policy.with_suffix(".tmp")
        tmp.write_text(json.dumps({"mode": mode, "allowlist": []}))
        tmp.replace(self.policy)  # a new inode: the gateway sees the change at once

    def mint(self, *, budget: ApiBudget | None = None, session: str = "s2") -> GatewayToken:
        self.token = self.tokens.mint(workspace="ws", session=session, budget=budget)
        return self.token

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def post(self, path: str = "/anthropic/v1/messages", *, token: str | None = None,
             body: dict[str, object] | None = None, headers: dict[str, str] | None = None,
             auth_header: str = "x-api-key") -> Answer:
        conn = self.connection()
        try:
            sent = {"content-type": "application/json", **(headers or {})}
            value = self.token.token if token is None else token
            if value:
                sent[auth_header] = value if auth_header == "x-api-key" else f"Bearer {value}"
            conn.request("POST", path, body=json.dumps(body or {"model": "claude-test", "max_tokens": 5}),
                         headers=sent)
            response = conn.getresponse()
            return Answer(status=response.status, body=response.read())
        finally:
            conn.close()

    def audit(self, event: str = "gateway.request") -> list[dict[str, object]]:
        if self._gateway is not None:  # a handler appends as it ends, on a worker thread: wait for both
            deadline = time.monotonic() + 30
            while self._gateway.open_requests and time.monotonic() < deadline:
                time.sleep(0.01)
            self._gateway._audit._worker.submit(lambda: None).result(timeout=30)
        return [dict(r.details) for r in read_records(path=self.audit_log) if r.event == event]


@pytest.fixture()
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setenv(NO_KEYRING_ENV, "1")
    with fake_provider(key=REAL_KEY, ca_path=tmp_path / "ca.pem") as fake:
        gateway = Harness(root=tmp_path, fake=fake)
        gateway.start()
        try:
            yield gateway
        finally:
            gateway.stop()
