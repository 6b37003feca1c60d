"""`agentbox completion bash|zsh|fish`: what a user gets on TAB, in the real shells."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest

from agentbox.cli.completion import completion_script
from agentbox.cli.main import build_parser, main


def subcommands(parser: argparse.ArgumentParser) -> list[str]:
    """The top-level commands of a parser, as argparse knows them."""
    return [name for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name in action.choices]


# The same list from another interpreter: an installed copy's own parser.
PRINT_SUBCOMMANDS = ("import argparse; from agentbox.cli.main import build_parser; "
                     "print(*(n for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction) "
                     "for n in a.choices))")


def _shell(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed: run scripts/setup.sh (it installs bash, zsh and fish)"
    return found


def bash_complete(script: str, words: list[str], tmp_path: Path) -> list[str]:
    """The candidates bash offers for `words` (the last one being completed), via the registered function."""
    path = tmp_path / "completion.bash"
    path.write_text(script)
    probe = (f'source {path}\nfn=$(complete -p agentbox | sed -E "s/.*-F ([^ ]+) .*/\\1/")\n'
             'COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}\n'
             '"$fn" agentbox "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]}"\nprintf "%s\\n" "${COMPREPLY[@]}"\n')
    result = subprocess.run([_shell("bash"), "--norc", "--noprofile", "-c", probe, "bash", *words],
                            capture_output=True, text=True, check=True, timeout=30)
    return sorted(set(result.stdout.split()))


def fish_complete(script: str, line: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "agentbox.fish"
    path.write_text(script)
    result = subprocess.run([_shell("fish"), "--no-config", "-c", f"source {path}; complete -C {line!r}"],
                            capture_output=True, text=True, check=True, timeout=30)
    assert result.stderr == "", result.stderr
    return sorted(row.split("\t")[0] for row in result.stdout.splitlines())


def _script(shell: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["completion", shell]) == 0
    return capsys.readouterr().out


def test_bash_offers_every_command_and_each_commands_own_options(capsys: pytest.CaptureFixture[str],
                                                                  tmp_path: Path) -> None:
    script = _script("bash", capsys)
    assert bash_complete(script, ["agentbox", ""], tmp_path) == sorted(subcommands(build_parser()))
    assert bash_complete(script, ["agentbox", "image", ""], tmp_path) == ["build", "list", "pull", "rm"]
    assert bash_complete(script, ["agentbox", "create", "demo", "--t"], tmp_path) == ["--template"]
    assert bash_complete(script, ["agentbox", "completion", ""], tmp_path) == ["bash", "fish", "zsh"]


def test_fish_offers_every_command_and_each_commands_own_options(capsys: pytest.CaptureFixture[str],
                                                                  tmp_path: Path) -> None:
    script = _script("fish", capsys)
    assert fish_complete(script, "agentbox ", tmp_path) == sorted(subcommands(build_parser()))
    assert fish_complete(script, "agentbox image ", tmp_path) == ["build", "list", "pull", "rm"]
    create_options = fish_complete(script, "agentbox create demo --", tmp_path)
    assert "--template" in create_options and "--cpus" in create_options and "--version" not in create_options
    assert fish_complete(script, "agentbox --", tmp_path) == ["--debug", "--help", "--version"]
    assert fish_complete(script, "agentbox completion ", tmp_path) == ["bash", "fish", "zsh"]


def test_zsh_script_is_valid_and_found_by_compinit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    script = _script("zsh", capsys)
    (tmp_path / "_agentbox").write_text(script)
    subprocess.run([_shell("zsh"), "-n", tmp_path / "_agentbox"], check=True, timeout=30)
    # Where the .deb puts it (a vendor-completions dir on fpath), compinit must bind it to agentbox.
    probe = f"fpath=({tmp_path} $fpath); autoload -U compinit; compinit -u -d {tmp_path}/dump; print $_comps[agentbox]"
    bound = subprocess.run([_shell("zsh"), "-f", "-c", probe], capture_output=True, text=True, check=True, timeout=30)
    assert bound.stdout.strip() == "_agentbox"
    assert all(command in script for command in subcommands(build_parser()))


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_follows_the_parser_it_is_given(shell: str, tmp_path: Path) -> None:
    """Generated, not hand-written: a command added to the parser is completed at once."""
    parser = argparse.ArgumentParser(prog="agentbox")
    sub = parser.add_subparsers(dest="command")
    frob = sub.add_parser("frobnicate", help="a command that did not exist")
    frob.add_argument("--level", choices=["low", "high"])
    script = completion_script(parser, shell)
    assert "frobnicate" in script and "level" in script
    if shell == "bash":
        assert bash_complete(script, ["agentbox", "fr"], tmp_path) == ["frobnicate"]
        assert bash_complete(script, ["agentbox", "frobnicate", "--level", ""], tmp_path) == ["high", "low"]
    if shell == "fish":
        assert fish_complete(script, "agentbox fr", tmp_path) == ["frobnicate"]
        assert fish_complete(script, "agentbox frobnicate --level ", tmp_path) == ["high", "low"]


def test_unknown_shell_is_refused_with_the_usual_hint(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["completion", "tcsh"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'tcsh'" in capsys.readouterr().err
