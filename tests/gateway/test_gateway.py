"""The credential gateway for real: guest-side requests on 127.0.0.1 (and its Unix socket),
the fake provider behind TLS with a test CA. What the guest would notice, and what the
provider receives."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest

from agentbox.model.api_use import ApiBudget
from agentbox.stores.gateway_tokens import read_usage
from tests.fake_provider import ANSWER
from tests.gateway.conftest import REAL_KEY, Harness


def draining(response: http.client.HTTPResponse) -> tuple[threading.Event, threading.Thread]:
    """A reader (not started) of the rest of a streamed answer; the event is set when the
    stream ends, cleanly or cut (an incomplete chunked read is how a cut shows)."""
    cut = threading.Event()

    def read_rest() -> None:
        try:
            while response.read1(65536):
                pass
        except (OSError, Exception):  # noqa: BLE001 - an incomplete chunked read is how the cut shows
            pass
        cut.set()

    return cut, threading.Thread(target=read_rest, daemon=True)


def test_the_provider_gets_the_real_key_and_the_guest_never_sees_it(harness: Harness) -> None:
    answer = harness.post()
    assert answer.status == 200, answer.body
    assert ANSWER in answer.body.decode()
    assert REAL_KEY not in answer.body.decode()
    seen = harness.fake.seen[-1]
    assert seen.header("x-api-key") == REAL_KEY
    assert harness.token.token not in json.dumps(seen.headers)  # the phantom token does not travel on
    assert seen.host.startswith("api.anthropic.com")
    assert seen.path == "/v1/messages"


def test_openai_takes_a_bearer_token_and_gets_a_bearer_key(harness: Harness) -> None:
    answer = harness.post("/openai/v1/chat/completions", auth_header="authorization",
                          body={"model": "gpt-test", "messages": []})
    assert answer.status == 200, answer.body
    seen = harness.fake.seen[-1]
    assert seen.header("authorization") == f"Bearer {REAL_KEY}"
    assert seen.host.startswith("api.openai.com")


def test_hop_by_hop_headers_host_and_other_credentials_do_not_cross(harness: Harness) -> None:
    answer = harness.post(headers={"Connection": "keep-alive, x-secret-hop", "x-secret-hop": "1",
                                   "Proxy-Authorization": "Basic abc", "Authorization": "Bearer guest-made",
                                   "Host": "evil.example", "anthropic-version": "2023-06-01"})
    assert answer.status == 200, answer.body
    seen = harness.fake.seen[-1]
    names = {name.lower() for name, _ in seen.headers}
    assert "x-secret-hop" not in names and "proxy-authorization" not in names
    assert seen.header("authorization") == ""
    assert seen.header("anthropic-version") == "2023-06-01"  # end-to-end headers do cross
    assert seen.host.startswith("api.anthropic.com")  # not the Host the guest named


def test_a_stream_arrives_as_it_is_sent(harness: Harness) -> None:
    conn = harness.connection()
    conn.request("POST", "/anthropic/v1/messages", body=json.dumps({"model": "claude-test", "stream": True}),
                 headers={"x-api-key": harness.token.token, "content-type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    first = b""
    while b"first half" not in first:  # the provider holds the rest back until we have read this
        chunk = response.read1(65536)
        assert chunk, "the stream ended before its first half arrived"
        first += chunk
    assert b"second half" not in first
    harness.fake.release.set()
    rest = response.read()
    conn.close()
    assert b"second half" in rest and b"message_stop" in rest
    record = harness.audit()[-1]
    assert record["tokens"] == 15  # input 10 + output 5, from the stream's usage events
    assert record["model"] == "claude-test"


def test_the_unix_socket_is_owner_only_and_serves(harness: Harness) -> None:
    assert harness.socket.stat().st_mode & 0o777 == 0o600
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(harness.socket))
        body = json.dumps({"model": "m"}).encode()
        sock.sendall(b"POST /anthropic/v1/messages HTTP/1.1\r\nHost: 127.0.0.1:3129\r\nConnection: close\r\n"
                     + f"x-api-key: {harness.token.token}\r\ncontent-length: {len(body)}\r\n".encode()
                     + b"content-type: application/json\r\n\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")


def test_another_host_or_provider_is_refused(harness: Harness) -> None:
    unknown = harness.post("/other.agentbox.test/v1/messages")
    assert unknown.status == 404 and "anthropic, openai" in unknown.message
    conn = harness.connection()  # an absolute-form target (a proxy request) names another host
    conn.request("GET", "https://other.agentbox.test/v1/messages", headers={"x-api-key": harness.token.token})
    response = conn.getresponse()
    assert response.status == 400
    conn.close()
    assert all(not s.host.startswith("other") for s in harness.fake.seen)


def test_no_wrong_or_other_workspaces_token_is_refused(harness: Harness) -> None:
    assert harness.post(token="").status == 401
    wrong = harness.post(token="sk-agentbox-phantom-" + "0" * 48)
    assert wrong.status == 403 and "not this workspace's current session token" in wrong.message
    other = harness.root / "other-ws" / "gateway-token.json"
    from agentbox.stores.gateway_tokens import GatewayTokenFile
    foreign = GatewayTokenFile(path=other).mint(workspace="other-ws")
    assert harness.post(token=foreign.token).status == 403
    assert harness.post(token=REAL_KEY).status == 403  # even the real key is not a token
    assert harness.fake.seen == []


def test_an_ended_sessions_token_is_dead(harness: Harness) -> None:
    old = harness.token.token
    assert harness.post().status == 200
    harness.mint(session="next")
    assert harness.post(token=old).status == 403
    assert harness.post().status == 200
    harness.tokens.revoke()  # the session ended; the reset mints the next
    ended = harness.post()
    assert ended.status == 401 and "no live session token" in ended.message


def test_off_mode_refuses_at_once_and_cuts_a_stream(harness: Harness) -> None:
    conn = harness.connection()
    conn.request("POST", "/anthropic/v1/messages", body=json.dumps({"model": "m", "stream": True}),
                 headers={"x-api-key": harness.token.token, "content-type": "application/json"})
    response = conn.getresponse()
    first = response.read1(65536)
    assert b"first half" in first or first
    harness.set_mode("off")
    cut, reader = draining(response)
    reader.start()
    assert cut.wait(30), "the stream was not cut when the network went off"
    conn.close()
    harness.fake.release.set()
    refused = harness.post()
    assert refused.status == 403 and "network is off" in refused.message
    harness.set_mode("allowlist")
    assert harness.post().status == 200


def test_a_missing_key_says_how_to_set_it(harness: Harness) -> None:
    harness.keys.remove(provider="anthropic")
    answer = harness.post()
    assert answer.status == 401
    assert "agentbox key set anthropic" in answer.message
    assert harness.fake.seen == []


def test_budgets_refuse_with_429_naming_the_budget(harness: Harness) -> None:
    harness.mint(budget=ApiBudget(requests=2))
    assert harness.post().status == 200
    assert harness.post().status == 200
    over = harness.post()
    assert over.status == 429 and "requests (2 of 2)" in over.message
    harness.mint(budget=ApiBudget(tokens=20))  # a new session: a new budget
    assert harness.post().status == 200  # 15 tokens
    assert harness.post().status == 200  # 30: past it now
    over = harness.post()
    assert over.status == 429 and "tokens (30 of 20)" in over.message
    harness.mint(budget=ApiBudget(bytes=100))
    with pytest.raises(http.client.IncompleteRead):  # the answer is longer than what is left: cut there
        harness.post()
    assert harness.post().status == 429
    assert [r["status"] for r in harness.audit()][-1] == 429
    token_id, use = read_usage(path=harness.root / "ws" / "usage.json")  # what a live display reads
    assert token_id == harness.token.id and use.requests == 1 and use.bytes_up + use.bytes_down >= 100


def test_every_request_is_audited_without_key_token_or_body(harness: Harness) -> None:
    harness.post(body={"model": "claude-secret-model", "messages": [{"content": "PRIVATE PROMPT"}]})
    harness.post(token="")
    records = harness.audit()
    assert [r["status"] for r in records] == [200, 401]
    ok = records[0]
    assert ok["method"] == "POST" and ok["path"] == "/v1/messages" and ok["provider"] == "anthropic"
    assert ok["model"] == "claude-secret-model" and ok["tokens"] == 15
    assert ok["bytes_up"] > 0 and ok["bytes_down"] > 0 and ok["token"] == harness.token.id
    text = harness.audit_log.read_text()
    assert REAL_KEY not in text and harness.token.token not in text and "PRIVATE PROMPT" not in text


def test_an_untrusted_certificate_is_refused(harness: Harness) -> None:
    harness.fake.ca_path.write_text("")  # not read again; use a gateway without the test CA instead
    import asyncio

    from agentbox.gateway.server import CredentialGateway, GatewayOptions
    from tests.gateway.conftest import PINS

    options = GatewayOptions(workspace="ws", socket_path=None, token_file=harness.tokens.path,
                             usage_file=harness.root / "u2.json", policy_file=harness.policy,
                             config_dir=harness.config_dir, pins=PINS, upstream_port=harness.fake.port, tcp_port=0)

    async def run() -> tuple[int, str]:
        gateway = CredentialGateway(options=options)
        await gateway.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway.tcp_port)
            writer.write(b"POST /anthropic/v1/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                         + f"x-api-key: {harness.token.token}\r\ncontent-length: 2\r\n\r\n{{}}".encode())
            data = await reader.read()
            writer.close()
            return int(data.split()[1]), data.decode()
        finally:
            await gateway.close()

    status, text = asyncio.run(run())
    assert status == 502 and "could not be verified" in text
    assert harness.fake.seen == []


def test_the_bytes_budget_cuts_a_stream_where_it_runs_out(harness: Harness) -> None:
    harness.mint(budget=ApiBudget(bytes=1))  # used up by the first chunk of the answer
    conn = harness.connection()
    conn.request("POST", "/anthropic/v1/messages", body=json.dumps({"model": "m", "stream": True}),
                 headers={"x-api-key": harness.token.token, "content-type": "application/json"})
    response = conn.getresponse()
    cut, reader = draining(response)
    reader.start()
    assert cut.wait(30), "the stream went on past the budget"  # the provider still holds its second half
    conn.close()
    harness.fake.release.set()
    deadline = time.monotonic() + 10
    while not harness.audit() and time.monotonic() < deadline:
        time.sleep(0.05)
    [record] = harness.audit()
    assert "API budget is used up: bytes" in str(record["refused"])
    assert harness.post().status == 429
