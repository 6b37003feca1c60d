"""Bad input everywhere a user can give it: workspace names on every command that takes one,
template and settings files (an alias bomb, wrong types), allowlist entries and modes. Each
gets a clear error naming the rule (and file:line for files), a hint and exit code 2 (input)
or 3 (files), never a traceback. Single cases with their exact messages: test_cli_errors.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentbox.cli.main import main

from .stored_world import run_cli

BAD_NAMES = ["../x", "a/b", "x" * 64, "ünï", "", "-lead", ".", "..", "a b", "a\nb", "UPPER"]
NAMED_COMMANDS = [
    ("start", "{}"), ("stop", "{}"), ("destroy", "{}", "--yes"), ("reset", "{}"), ("reclean", "{}"),
    ("checkpoint", "{}", "c1"), ("checkpoints", "{}"), ("restore", "{}", "c1"), ("session", "start", "{}"),
    ("net", "show", "{}"), ("net", "allow", "{}", "pypi.org"), ("net", "deny", "{}", "pypi.org"),
    ("net", "{}", "off"), ("share", "add", "{}", "/tmp"), ("share", "list", "{}"), ("share", "rm", "{}", "t"),
    ("outbox", "{}"), ("exec", "{}", "--", "true"), ("ssh", "{}"), ("audit", "{}"), ("audit", "verify", "{}"),
    ("receipts", "{}"), ("create", "{}"), ("run", "--name", "{}", "--", "true"), ("budget", "{}"),
    ("budget", "{}", "--egress", "1M"),
]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


@pytest.mark.parametrize("command", NAMED_COMMANDS, ids=lambda c: " ".join(c).replace("{}", "NAME"))
def test_a_bad_workspace_name_is_refused_with_the_rule_on_every_command(
        command: tuple[str, ...], agentbox_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for bad in BAD_NAMES:
        code, err = run([bad if word == "{}" else word for word in command], capsys)
        assert code == 2 and "hint:" in err and "Traceback" not in err, (bad, code, err)
        if not bad.startswith("-"):  # that one is an unknown option to argparse, which says so
            assert "invalid workspace name" in err and "lowercase letters" in err, (bad, err)
        assert not (agentbox_root / "x").exists() and not (agentbox_root / "data" / "x").exists()


def user_template(root: Path, text: str) -> Path:
    path = root / "config" / "templates" / "t.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("name: t\nimage: {build: debian-12}\n" + text)
    return path


ALIAS_BOMB = "".join([
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n',
    *(f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)),
])


@pytest.mark.timeout(60)  # without the fix, walking the bomb's nodes never ends
@pytest.mark.parametrize(("text", "line", "rule"), [
    (ALIAS_BOMB, 4, "YAML aliases (*name) are not allowed"),
    ("resources:\n  vcpus: two\n", 4, "resources.vcpus: expected an integer"),
    ("resources: [1, 2]\n", 3, "resources: expected a mapping, got a list"),
    ("resources:\n  disk_gib: true\n", 4, "resources.disk_gib: expected an integer"),
    ("cloud_init: 5\n", 3, "cloud_init: expected a mapping"),
    ("policy:\n  network: maybe\n", 4, "policy.network:"),
    ("policy:\n  allowlist: pypi.org\n", 4, "policy.allowlist:"),
    ("description: [not, text]\n", 3, "description: expected a non-empty string"),
    ("image: {build: debian-12}\n", 3, "image: duplicate key"),
    ("\tresources: {}\n", 3, "invalid YAML"),
])
def test_a_bad_template_names_file_line_and_rule(text: str, line: int, rule: str, agentbox_root: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = user_template(agentbox_root, text)
    for argv in (["template", "show", "t"], ["create", "ws", "--template", "t"]):
        code, err = run(argv, capsys)
        assert code == 3 and f"{path}:{line}: " in err and rule in err and "Traceback" not in err, (argv, err)


@pytest.mark.parametrize(("text", "line", "rule"), [
    ("boot_timeout_s: soon\n", 1, "boot_timeout_s: expected an integer"),
    ("boot_timeout_s: 1\n", 1, "boot_timeout_s:"),
    ("storage_dir: relative/dir\n", 1, "storage_dir:"),
    ("storage_dir: 5\n", 1, "storage_dir:"),
    ("domain_prefix: Bad/Prefix\n", 1, "domain_prefix: must be lowercase letters"),
    ("egress_hosts: [a, b]\n", 1, "egress_hosts: expected a mapping"),
    ("colour: blue\n", 1, "colour: unknown key"),
    ("- a\n- b\n", 1, "expected a mapping"),
    ("x: &x 1\ny: *x\n", 2, "YAML aliases (*name) are not allowed"),
])
def test_bad_settings_name_file_line_and_rule(text: str, line: int, rule: str, agentbox_root: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    settings = agentbox_root / "config" / "settings.yaml"
    settings.write_text(text)
    code, err = run(["list"], capsys)
    assert code == 3 and f"{settings}:{line}: " in err and rule in err and "Traceback" not in err, err


BAD_ENTRIES = [
    ("http://x/y", "not a URL or path"), ("*", "'*' alone is not an entry"),
    ("a*.b.com", "a wildcard is only allowed as a whole first label"), (" ", "it is empty"),
    ("bad_host!", "neither an IP address nor a valid host name"), ("10.0.0.0/33", "not a valid IP address or CIDR"),
    ("pypi.org:99999", "not a number from 1 to 65535"), ("[::1", "without a closing ']'"),
    ("1.2.3.4/8", "has host bits set"), ("a" * 300 + ".com", "neither an IP address nor a valid host name"),
]


def test_bad_allowlist_entries_and_modes_are_refused_with_the_rule(tmp_path: Path) -> None:
    assert run_cli(tmp_path, "create", "ws").code == 0
    for entry, rule in BAD_ENTRIES:
        done = run_cli(tmp_path, "net", "allow", "ws", entry)
        assert done.code == 2 and rule in done.err and "hint: valid forms:" in done.err, (entry, done.err)
    for mode in ("maybe", "", "OPEN"):
        done = run_cli(tmp_path, "net", "ws", mode)
        assert done.code == 2 and "use one of off, allowlist, learn, open" in done.err, (mode, done.err)
    policy = json.loads((tmp_path / "root" / "data" / "workspaces" / "ws" / "policy.json").read_text())
    assert policy["allowlist"] == [], "nothing refused got in"


def test_net_on_an_unknown_workspace_is_not_found_not_a_missing_policy_file(
        agentbox_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["net", "ghost", "off"], ["net", "allow", "ghost", "pypi.org"], ["net", "deny", "ghost", "x.org"]):
        code, err = run(argv, capsys)
        assert code == 4 and "no workspace named 'ghost'" in err, (argv, err)
