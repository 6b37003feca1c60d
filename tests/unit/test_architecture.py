"""The layer rules of DESIGN.md section 2, checked three ways: import-linter's contracts
(static), what each layer really loads at run time, and the code rules that keep errors and
output at the edges (no print/sys.exit below cli, no shell strings)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "agentbox"
REPO = PACKAGE.parent
EDGES = ("cli", "tui")  # with entry.py and the __main__ modules: the only code that may print or exit


def test_import_linter_contracts_hold() -> None:
    linter = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(linter), "--no-cache"], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("agentbox.model.template", ("libvirt", "paramiko", "textual", "yaml", "agentbox.config")),
        ("agentbox.config.templates", ("libvirt", "paramiko", "textual", "agentbox.services")),
        ("agentbox.services.workspaces", ("libvirt", "textual", "agentbox.cli", "agentbox.bootstrap")),
        ("agentbox.cli.main", ("textual",)),  # the CLI starts without loading the TUI
    ],
)
def test_a_layer_loads_nothing_above_it_or_beside_its_rules(module: str, forbidden: tuple[str, ...]) -> None:
    probe = (
        f"import sys, {module}\n"
        f"bad = [m for m in sys.modules if any(m == f or m.startswith(f + '.') for f in {forbidden!r})]\n"
        "print(','.join(sorted(bad)))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", f"{module} loaded {done.stdout.strip()}"


def _python_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return f"{_name(func.value)}.{func.attr}"
    return ""


def test_no_print_or_exit_below_the_edges() -> None:
    offenders = []
    for path in _python_files():
        layer = path.relative_to(PACKAGE).parts[0]
        if layer in EDGES or path.name in ("__main__.py", "entry.py"):
            continue
        for call in _calls(ast.parse(path.read_text(), str(path))):
            if _name(call.func) in ("print", "sys.exit", "exit", "quit"):
                offenders.append(f"{path.relative_to(REPO)}:{call.lineno} {_name(call.func)}")
    assert offenders == []


def test_no_shell_strings_anywhere() -> None:
    offenders = []
    for path in _python_files():
        for call in _calls(ast.parse(path.read_text(), str(path))):
            name = _name(call.func)
            spawns = name.rsplit(".", 1)[-1] in ("run", "Popen", "call", "check_call", "check_output")
            # shell=True anywhere; for process spawners, anything but a literal False.
            shell = any(k.arg == "shell" and (
                (isinstance(k.value, ast.Constant) and k.value.value is True)
                or (spawns and not (isinstance(k.value, ast.Constant) and k.value.value is False)))
                for k in call.keywords)
            if shell or name in ("os.system", "os.popen"):
                offenders.append(f"{path.relative_to(REPO)}:{call.lineno} {name}")
    assert offenders == []
