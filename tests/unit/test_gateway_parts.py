"""The credential gateway's pure parts: providers, header rules, usage reading, budgets,
the guest's profile, and the template's `budget:`."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from agentbox.config.templates import load_template
from agentbox.errors import ConfigError, InvalidInput
from agentbox.gateway.headers import downstream_headers, presented_token, upstream_headers
from agentbox.gateway.usage import UsageScanner, request_model
from agentbox.model.api_use import ApiBudget, ApiUse
from agentbox.model.providers import get_provider
from agentbox.services.gateway_access import GUEST_PROFILE, guest_profile, profile_install_script
from agentbox.stores.gateway_tokens import GatewayTokenFile


def test_unknown_provider_names_the_known_ones() -> None:
    with pytest.raises(InvalidInput) as info:
        get_provider("acme")
    assert "anthropic" in (info.value.hint or "") and "openai" in (info.value.hint or "")


def test_the_token_swap_and_the_headers_that_never_cross() -> None:
    openai = get_provider("openai")
    sent = [("Authorization", "Bearer phantom"), ("Connection", "close, X-Hop"), ("X-Hop", "1"),
            ("Keep-Alive", "timeout=5"), ("Transfer-Encoding", "chunked"), ("Host", "evil"),
            ("x-api-key", "phantom"), ("Accept-Encoding", "gzip"), ("OpenAI-Beta", "assistants=v2")]
    assert presented_token(provider=openai, headers=sent) == "phantom"
    assert presented_token(provider=openai, headers=[("Authorization", "Basic phantom")]) == ""
    out = dict((k.lower(), v) for k, v in upstream_headers(provider=openai, headers=sent, key="REAL"))
    assert out == {"openai-beta": "assistants=v2", "authorization": "Bearer REAL", "accept-encoding": "identity"}
    back = downstream_headers([("Content-Length", "5"), ("Connection", "x-a"), ("X-A", "1"),
                               ("content-type", "text/event-stream"), ("request-id", "r1")])
    assert back == [("content-type", "text/event-stream"), ("request-id", "r1")]


def test_usage_from_json_and_from_a_stream_split_anywhere() -> None:
    plain = UsageScanner(content_type="application/json")
    plain.feed(b'{"usage": {"prompt_tokens": 7, ')
    plain.feed(b'"completion_tokens": 3, "total_tokens": 10}}')
    assert plain.tokens() == 10
    stream = UsageScanner(content_type="text/event-stream; charset=utf-8")
    events = (b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":12,'
              b'"output_tokens":1}}}\n\nevent: message_delta\ndata: {"usage":{"output_tokens":4}}\n\n'
              b'data: {"usage":{"output_tokens":9}}\n\n')
    for i in range(0, len(events), 7):
        stream.feed(events[i:i + 7])
    assert stream.tokens() == 21  # 12 in, the largest running output count 9
    assert UsageScanner(content_type="text/plain").tokens() == 0
    assert request_model(b'{"model": "claude-x"}', content_type="application/json") == "claude-x"
    assert request_model(b"not json", content_type="application/json") == ""


def test_budgets_say_which_one_ran_out() -> None:
    budget = ApiBudget(requests=3, bytes=1000, tokens=50)
    assert ApiUse(requests=2, bytes_up=10, bytes_down=10, tokens=10).exhausted(budget) == ""
    assert ApiUse(requests=3).exhausted(budget).startswith("requests")
    assert ApiUse(bytes_up=600, bytes_down=400).exhausted(budget).startswith("bytes")
    assert ApiUse(tokens=50).exhausted(budget).startswith("tokens")
    assert ApiUse(requests=10 ** 6).exhausted(ApiBudget()) == ""  # 0: no limit
    with pytest.raises(InvalidInput):
        ApiBudget(requests=-1)


def test_the_template_budget(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nimage: {build: debian-12}\nbudget:\n  requests: 100\n  tokens: 5000\n")
    assert load_template(path=path).budget == ApiBudget(requests=100, tokens=5000)
    path.write_text("name: t\nimage: {build: debian-12}\nbudget:\n  requests: -5\n")
    with pytest.raises(ConfigError) as info:
        load_template(path=path)
    assert "t.yaml:4" in info.value.message
    path.write_text("name: t\nimage: {build: debian-12}\nbudget:\n  dollars: 5\n")
    with pytest.raises(ConfigError):
        load_template(path=path)


def test_the_guest_profile_holds_only_the_token_and_base_urls(tmp_path: Path) -> None:
    token = GatewayTokenFile(path=tmp_path / "t.json").mint(workspace="ws", session="s")
    text = guest_profile(token)
    shell = subprocess.run(["sh", "-c", f"{text}\nenv"], check=True, capture_output=True, text=True).stdout
    env = dict(line.split("=", 1) for line in shell.splitlines() if "=" in line)
    assert env["ANTHROPIC_API_KEY"] == env["OPENAI_API_KEY"] == token.token
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:3129/anthropic"
    assert env["OPENAI_BASE_URL"] == env["OPENAI_API_BASE"] == "http://127.0.0.1:3129/openai/v1"
    script = profile_install_script(token)
    assert GUEST_PROFILE in script and "chmod 0644" in script
    assert shlex.split(script)  # one well-formed shell command
    stored = json.loads((tmp_path / "t.json").read_text())
    assert stored["token"] == token.token and (tmp_path / "t.json").stat().st_mode & 0o777 == 0o600


def test_each_new_token_is_approved_for_claude_code_where_its_config_is(tmp_path: Path) -> None:
    # Claude Code would otherwise ask "Detected a custom API key ... use it?" before its prompt,
    # every session (the token is new each time); in a guest without it nothing is written.
    tokens = GatewayTokenFile(path=tmp_path / "t.json")
    home = tmp_path / "home"
    home.mkdir()
    config = home / ".claude.json"
    config.write_text(json.dumps({"hasCompletedOnboarding": True}))
    config.chmod(0o600)
    profile = tmp_path / "profile.sh"
    for _ in range(2):
        token = tokens.mint(workspace="ws", session="s")
        script = profile_install_script(token, home=str(home)).replace(GUEST_PROFILE, str(profile))
        subprocess.run(["sh", "-c", script], check=True)
        doc = json.loads(config.read_text())
        assert token.token[-20:] in doc["customApiKeyResponses"]["approved"]
    assert len(doc["customApiKeyResponses"]["approved"]) == 2 and doc["hasCompletedOnboarding"] is True
    assert config.stat().st_mode & 0o777 == 0o600 and token.token not in config.read_text()
    bare = tmp_path / "bare"
    bare.mkdir()
    subprocess.run(["sh", "-c", profile_install_script(token, home=str(bare)).replace(GUEST_PROFILE, str(profile))],
                   check=True)
    assert list(bare.iterdir()) == []
