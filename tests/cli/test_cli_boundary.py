"""The CLI's error boundary through main(argv): an OSError no service expected becomes one
clear line with the path and a hint (exit 15), and --debug shows the whole cause chain."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from agentbox import errors
from agentbox.cli.main import OS_ERROR_EXIT, build_parser, main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def data_dir_is_a_file(root: Path) -> Path:
    data = root / "data"
    data.write_text("not a folder\n")
    return data


def test_an_os_error_is_one_line_with_the_path_and_a_hint(agentbox_root: Path, capsys) -> None:
    data = data_dir_is_a_file(agentbox_root)
    code, _, err = run(["receipts", "ws"], capsys)
    assert code == OS_ERROR_EXIT
    assert err.splitlines() == [f"error: {data}/audit/ws.jsonl: Not a directory",
                                f"hint: a part of {data}/audit/ws.jsonl is a file where agentbox expects a folder: "
                                "move it away"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes whatever the permissions say")
def test_a_data_dir_without_permission_says_check_the_permissions(agentbox_root: Path, capsys) -> None:
    audit = agentbox_root / "data" / "audit"
    audit.mkdir(parents=True)
    (audit / "ws.jsonl").write_text("")
    audit.chmod(0)
    try:
        code, _, err = run(["audit", "ws"], capsys)
    finally:
        audit.chmod(0o700)
    assert code == OS_ERROR_EXIT
    assert "Permission denied" in err and "check the owner and permissions" in err


def test_debug_shows_the_traceback_and_the_cause_a_service_replaced(agentbox_root: Path, capsys) -> None:
    (agentbox_root / "config" / "settings.yaml").write_text("storage_dir: [\n")
    code, _, err = run(["list"], capsys)
    assert code == 3 and "Traceback" not in err
    code, _, err = run(["--debug", "list"], capsys)
    assert code == 3
    assert err.startswith("error: ") and "invalid YAML" in err.splitlines()[0]
    assert "Traceback (most recent call last)" in err
    assert "yaml.parser.ParserError" in err  # the YAML library's own error, behind the ConfigError
    assert err.rstrip().splitlines()[-1].startswith("agentbox.errors.ConfigError: ")


def test_debug_shows_where_an_os_error_happened(agentbox_root: Path, capsys) -> None:
    data_dir_is_a_file(agentbox_root)
    code, _, err = run(["--debug", "receipts", "ws"], capsys)
    assert code == OS_ERROR_EXIT
    assert "NotADirectoryError" in err and "receipts.py" in err


def test_the_help_documents_every_exit_code(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    documented = {int(n) for n in re.findall(r"(?m)(?:^|\s{2,})(\d+)\s{2,}\S", out.split("exit codes:")[1])}
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.AgentboxError)]
    assert {c.exit_code for c in classes} | {0, OS_ERROR_EXIT} <= documented
