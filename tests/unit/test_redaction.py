"""The redaction rules: which parts of a command line are kept out of the audit log and
receipts, and which common non-secrets are left alone."""

from __future__ import annotations

import pytest

from agentbox.model.redaction import REDACTED, redact_argv, redact_text

R = REDACTED


@pytest.mark.parametrize(("argv", "expected"), [
    # Vendor token formats, wherever they appear.
    (["claude", "sk-ant-api03-AbCdEf0123456789_-xyz"], ["claude", R]),
    (["x", "sk-proj-abcdefghijklmnopqrstuvwx12"], ["x", R]),
    (["x", "sk-abcdefghijklmnopqrstuvwxyz0123"], ["x", R]),
    (["git", "clone", "https://ghp_abcdefghijklmnopqrstuvwxyz0123@github.com/o/r"],
     ["git", "clone", f"https://{R}@github.com/o/r"]),
    (["x", "github_pat_11ABCDEFG0123456789_abcdefghijklmnop"], ["x", R]),
    (["aws", "--profile", "p", "AKIAIOSFODNN7EXAMPLE"], ["aws", "--profile", "p", R]),
    (["x", "xoxb-1234567890-abcdefghij"], ["x", R]),
    (["curl", "-H", "Authorization: Bearer abc.def-123456"], ["curl", "-H", f"Authorization: Bearer {R}"]),
    (["curl", "-H", "authorization: token 0123456789abcdef"], ["curl", "-H", f"authorization: token {R}"]),
    (["curl", "https://me:hunter2@example.test/x"], ["curl", f"https://me:{R}@example.test/x"]),
    # Assignments whose name says secret, alone or inside a script; case does not matter.
    (["env", "FOO_KEY=abc", "DEBUG=1", "make"], ["env", f"FOO_KEY={R}", "DEBUG=1", "make"]),
    (["sh", "-c", "export GITHUB_TOKEN=abc123; PGPASSWORD='a b' psql"],
     ["sh", "-c", f"export GITHUB_TOKEN={R}; PGPASSWORD={R} psql"]),
    (["python", "-c", "x", "db_password=pw", "client_secret=s", "MYSQL_PWD=p"],
     ["python", "-c", "x", f"db_password={R}", f"client_secret={R}", f"MYSQL_PWD={R}"]),
    # Secret-named options, as `--opt value` and `--opt=value`.
    (["mysql", "--password", "hunter2"], ["mysql", "--password", R]),
    (["gh", "--token=abc"], ["gh", f"--token={R}"]),
    (["tool", "--api-key", "k", "--auth_token", "t", "--client-secret=s"],
     ["tool", "--api-key", R, "--auth_token", R, f"--client-secret={R}"]),
    # The value of a container's env option, whatever the variable is called.
    (["docker", "run", "-e", "FOO=bar", "--env", "X=1", "--env=Y=2", "img"],
     ["docker", "run", "-e", f"FOO={R}", "--env", f"X={R}", f"--env=Y={R}", "img"]),
])
def test_likely_secrets_are_replaced(argv: list[str], expected: list[str]) -> None:
    result = redact_argv(argv)
    assert list(result.argv) == expected
    assert result.count == sum(a.count(R) for a in expected)


@pytest.mark.parametrize("argv", [
    ["make", "test"],
    ["sh", "-c", "exit 2"],
    ["ssh", "-p", "2222", "host"],  # -p is a port, or mkdir's parents: never taken for a password
    ["mkdir", "-p", "a/b"],
    ["sort", "--key=2", "-k", "3"],
    ["docker", "login", "--password-stdin"],
    ["curl", "--netrc-file", "f", "--token-file", "t", "--no-password", "x"],
    ["gh", "--token", "$GH_TOKEN", "API_KEY=${API_KEY}"],  # references, not values
    ["docker", "run", "-e", "HOME", "img"],  # passes the host's value, which is not on the line
    ["grep", "-e", "pattern", "sed", "-e", "s/a=b/c/"],
    ["git", "-c", "core.sshCommand=ssh", "log", "--format=%H", "deadbeef" * 5],
    ["python", "train.py", "--tokenizer=gpt2", "--max-tokens", "100", "--sort-key=name"],
    ["echo", "task-abcdefghijklmnopqrstuvwxyz"],
])
def test_common_non_secrets_are_left_alone(argv: list[str]) -> None:
    result = redact_argv(argv)
    assert (list(result.argv), result.count) == (argv, 0)


def test_redacting_twice_changes_nothing_more() -> None:
    once = redact_argv(["sh", "-c", "API_KEY=sk-ant-abcdefghijkl curl -H 'Authorization: Bearer abcdefghij'",
                        "--password", "x", "-e", "A=b"])
    assert once.count == 4
    again = redact_argv(once.argv)
    assert (again.argv, again.count) == (once.argv, 0)


def test_the_count_is_the_number_of_values_replaced() -> None:
    text, count = redact_text("A_TOKEN=1 B_SECRET=2 sk-ant-abcdefghijklmn plain=3")
    assert (text, count) == (f"A_TOKEN={R} B_SECRET={R} {R} plain=3", 3)
