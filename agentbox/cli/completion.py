"""`agentbox completion bash|zsh|fish`: shell completion generated from the live parser.

bash and zsh come from shtab; fish has no shtab backend, so a small generic walker over the
argparse tree writes `complete` lines. Nothing here is hand-written per command: a new
subcommand or option shows up in every shell's completion without touching this file.
"""

from __future__ import annotations

import argparse
import sys

import shtab

SHELLS = ("bash", "zsh", "fish")

# Where each shell looks for completions, shown in `agentbox completion --help`.
_INSTALL_HINT = """\
install for the current user:
  bash: agentbox completion bash > ~/.local/share/bash-completion/completions/agentbox
  zsh:  agentbox completion zsh > ~/.zfunc/_agentbox   (with fpath+=~/.zfunc before compinit)
  fish: agentbox completion fish > ~/.config/fish/completions/agentbox.fish
the Debian package installs all three system-wide."""


def add_completion_parser(sub: argparse._SubParsersAction, root: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    """Register `completion SHELL`; `root` is read when the command runs, so it is complete by then."""
    parser = sub.add_parser("completion", help="print a shell completion script (bash, zsh or fish)",
                            epilog=_INSTALL_HINT, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shell", choices=SHELLS, help="the shell to print the script for")
    parser.set_defaults(handler=lambda args: _print_script(root, args.shell))


def _print_script(root: argparse.ArgumentParser, shell: str) -> int:
    sys.stdout.write(completion_script(root, shell))
    return 0


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    if shell == "fish":
        return fish_script(parser)
    if shell in ("bash", "zsh"):
        return shtab.complete(parser, shell=shell)
    raise ValueError(f"unsupported shell {shell!r}; expected one of {', '.join(SHELLS)}")


# fish: the typed words (options dropped) decide where on the command tree the cursor is.
_FISH_HELPERS = """\
function __fish_{fn}_words
    for word in (commandline -opc)[2..-1]
        string match -q -- '-*' $word; or echo $word
    end
end
# exactly these subcommands typed so far (offer the next level)
function __fish_{fn}_at
    set -l words (__fish_{fn}_words)
    test (count $words) -eq (count $argv); and test "$words" = "$argv"
end
# these subcommands typed first, maybe followed by positional values (offer their options)
function __fish_{fn}_in
    set -l words (__fish_{fn}_words)
    set -l n (count $argv)
    test $n -eq 0; and return 0
    test (count $words) -ge $n; and test "$words[1..$n]" = "$argv"
end
"""


def fish_script(parser: argparse.ArgumentParser) -> str:
    prog = parser.prog
    fn = "".join(c if c.isalnum() else "_" for c in prog)
    lines = [f"# fish completion for {prog}, generated from its argument parser; do not edit",
             _FISH_HELPERS.format(fn=fn).rstrip("\n"),
             f"complete -c {prog} -f  # no file names unless an option asks for them"]
    _fish_parser(lines, parser, prog=prog, fn=fn, path=())
    return "\n".join(lines) + "\n"


def _fish_parser(lines: list[str], parser: argparse.ArgumentParser, *, prog: str, fn: str,
                 path: tuple[str, ...]) -> None:
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    # A parser with subcommands takes no positional values, so only an exact path selects it.
    where = _fish_condition(fn, "at" if subparsers or not path else "in", path)
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        if action.option_strings:
            lines.append(_fish_option(prog, where, action))
        elif action.choices:
            lines.append(f"complete -c {prog} -n {where} -a {_fish_quote(' '.join(map(str, action.choices)))}"
                         + _fish_description(action.help, action, prog))
    for action in subparsers:
        help_by_parser = {id(action.choices[c.dest]): c.help for c in action._choices_actions}
        at_here = _fish_condition(fn, "at", path)
        for name, child in action.choices.items():
            text = help_by_parser.get(id(child))
            if text == argparse.SUPPRESS:
                continue
            lines.append(f"complete -c {prog} -n {at_here} -a {_fish_quote(name)}" + _fish_description(text))
            _fish_parser(lines, child, prog=prog, fn=fn, path=(*path, name))


def _fish_option(prog: str, where: str, action: argparse.Action) -> str:
    parts = [f"complete -c {prog} -n {where}"]
    for option in action.option_strings:
        if option.startswith("--"):
            parts.append(f"-l {option[2:]}")
        elif len(option) == 2:
            parts.append(f"-s {option[1]}")
        else:
            parts.append(f"-o {option[1:]}")
    if action.nargs != 0:
        # shtab's FILE/DIRECTORY markers ask for paths; any other value is free text.
        wants_path = getattr(action, "complete", None) in (shtab.FILE, shtab.DIRECTORY)
        parts.append("-r -F" if wants_path else "-x")
        if action.choices:
            parts.append(f"-a {_fish_quote(' '.join(map(str, action.choices)))}")
    return " ".join(parts) + _fish_description(action.help, action, prog)


def _fish_condition(fn: str, kind: str, path: tuple[str, ...]) -> str:
    return _fish_quote(" ".join((f"__fish_{fn}_{kind}", *path)))


def _fish_description(text: str | None, action: argparse.Action | None = None, prog: str = "") -> str:
    if not text or text == argparse.SUPPRESS:
        return ""
    try:  # argparse expands %(default)s and friends in option help, and unescapes %%
        text = text % ({**vars(action), "prog": prog} if action is not None else {})
    except (KeyError, TypeError, ValueError):
        pass
    return f" -d {_fish_quote(text)}"


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
