"""The CLI's error boundary through main(argv): an OSError no service expected becomes one
clear line with the path and a hint (exit 15), and --debug shows the whole cause chain."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
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
    error, hint = err.splitlines()
    # The first path it touches under the data dir (the audit folder or a log in it).
    assert re.fullmatch(rf"error: {re.escape(str(data))}/audit(/ws\.jsonl)?: Not a directory", error), error
    assert re.fullmatch(rf"hint: a part of {re.escape(str(data))}/audit\S* is a file where agentbox expects a "
                        "folder: move it away", hint), hint


def test_a_data_dir_without_permission_says_check_the_permissions(tmp_path: Path) -> None:
    """Root reads whatever the permissions say, so as root the command runs as nobody."""
    root = Path(tempfile.mkdtemp(prefix="agentbox-perm-"))
    try:
        root.chmod(0o755)
        audit = root / "data" / "audit"
        audit.mkdir(parents=True)
        (audit / "ws.jsonl").write_text("")
        for folder in (root / "data", audit):
            folder.chmod(0o755)
        audit.chmod(0)
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
        repo = Path(__file__).parents[2]
        done = subprocess.run([*as_nobody, sys.executable, "-m", "agentbox", "audit", "ws"], capture_output=True,
                              text=True, timeout=60, cwd="/",
                              env={**os.environ, "AGENTBOX_ROOT": str(root), "PYTHONPATH": str(repo), "HOME": "/"})
    finally:
        audit.chmod(0o700)
        shutil.rmtree(root)
    assert done.returncode == OS_ERROR_EXIT, done.stderr
    assert "Permission denied" in done.stderr and "check the owner and permissions" in done.stderr


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
