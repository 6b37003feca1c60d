"""Redacting likely secrets from a command line before agentbox records it.

A command run through `agentbox exec` or `run` goes into the audit log and the session
receipt, both kept for good. A key typed on that command line must not be kept with it.
The rules below aim at what people actually paste: vendor token formats, `NAME=value`
assignments whose name says secret, the value of a secret-named option, and the value
of a container's `-e/--env NAME=value`. They err towards redacting, but leave alone what
is a common non-secret (`-p` is a port or `mkdir -p`, `--key` is sort's, `--password-file`
names a file, `$TOKEN` is a reference).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

REDACTED = "[redacted]"

# Vendor formats, matched anywhere in an argument.
_TOKENS = re.compile("|".join([
    r"\bsk-ant-[A-Za-z0-9_-]{8,}",  # Anthropic
    r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",  # OpenAI
    r"\bgh[pousr]_[A-Za-z0-9]{20,}",  # GitHub tokens
    r"\bgithub_pat_[A-Za-z0-9_]{20,}",
    r"\bglpat-[A-Za-z0-9_-]{20,}",  # GitLab
    r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",  # AWS access key id
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}",  # Slack
    r"\bAIza[A-Za-z0-9_-]{35}",  # Google API key
    r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWT
]))
# Keep the scheme/word before the secret: only the secret itself is replaced.
_BEARER = re.compile(r"(?i)(\bbearer\s+|\bauthorization:\s*(?:basic\s+|token\s+)?)([A-Za-z0-9._~+/=-]{8,})")
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)([^/\s@]+)(@)")
_SECRET_WORDS = r"(?:api[-_]?key|access[-_]?key|secret[-_]?key|private[-_]?key|secret|token|password|passwd|pwd)"
# NAME=value at the start of an argument or after a shell separator (so `--sort-key=2` is not one).
_ASSIGNMENT = re.compile(
    r"(?<![^\s;&|(`'\"])([A-Za-z_][A-Za-z0-9_]*=)(\"[^\"]*\"|'[^']*'|[^\s;&|)`'\"]+)")
_SECRET_NAME = re.compile(r"(?i)(?:key|token|secret|password|passwd|credentials?|_pwd|_auth)")
_SECRET_OPTION = re.compile(rf"(?i)^--?(?:[a-z0-9]+[-_])*{_SECRET_WORDS}$")
_ENV_OPTIONS = ("-e", "--env")
_ENV_VALUE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*=)(.+)", re.DOTALL)


@dataclass(frozen=True)
class RedactedArgv:
    argv: tuple[str, ...]
    count: int  # how many values were replaced with REDACTED


def redact_argv(argv: Sequence[str]) -> RedactedArgv:
    """`argv` with every likely secret replaced by REDACTED. Idempotent: redacting the
    result again replaces nothing."""
    out: list[str] = []
    count = 0
    value_of: str | None = None  # the option whose value this argument is
    for arg in argv:
        if value_of is not None:
            new, n = _option_value(value_of, arg)
            value_of = None
        elif "=" in arg and arg.startswith("-") and _is_value_option(arg.split("=", 1)[0]):
            option, value = arg.split("=", 1)
            new, n = _option_value(option, value)
            new = f"{option}={new}"
        else:
            new, n = redact_text(arg)
            if _is_value_option(arg):
                value_of = arg
        out.append(new)
        count += n
    return RedactedArgv(argv=tuple(out), count=count)


def redact_text(text: str) -> tuple[str, int]:
    """`text` (one argument, or a whole `sh -c` script) with its likely secrets replaced;
    and how many were."""
    count = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return REDACTED

    def keep_around(match: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return match.group(1) + REDACTED + (match.group(3) if match.re is _URL_PASSWORD else "")

    def assignment(match: re.Match[str]) -> str:
        nonlocal count
        name, value = match.group(1), match.group(2)
        if not _SECRET_NAME.search(name[:-1]) or _is_reference(value):
            return match.group(0)
        count += 1
        return name + REDACTED

    text = _TOKENS.sub(replace, text)
    text = _BEARER.sub(lambda m: m.group(0) if m.group(2) == REDACTED else keep_around(m), text)
    text = _URL_PASSWORD.sub(lambda m: m.group(0) if m.group(2) == REDACTED else keep_around(m), text)
    text = _ASSIGNMENT.sub(assignment, text)
    return text, count


def _is_value_option(option: str) -> bool:
    if option.lower().startswith("--no-"):
        return False
    return option in _ENV_OPTIONS or bool(_SECRET_OPTION.match(option))


def _option_value(option: str, value: str) -> tuple[str, int]:
    if option in _ENV_OPTIONS:  # NAME=value: the value, whatever the name; a bare NAME passes the host's
        match = _ENV_VALUE.match(value)
        if match is None or _is_reference(match.group(2)):
            return redact_text(value)
        return match.group(1) + REDACTED, 1
    if not value or _is_reference(value):
        return value, 0
    return REDACTED, 1


def _is_reference(value: str) -> bool:
    """Already redacted, or a shell reference to a variable rather than its value."""
    bare = value.strip("\"'")
    return bare == REDACTED or bare.startswith("$") or not bare
