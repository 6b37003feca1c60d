"""Pinned installs from package registries (npm, PyPI) that a layer adds at build time.

Only exact versions are accepted: a layer is cached by its recipe's hash, so a range
("^1.2", ">=0.8") would let two builds of the same recipe install different code. The
rules are strict on purpose: nothing but a name and a version reaches npm or pip.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agentbox.errors import InvalidInput

__all__ = [
    "NPM_RULE",
    "PIP_RULE",
    "NpmPackage",
    "PipPackage",
    "parse_npm_spec",
    "parse_pip_spec",
]

# npm: an optional @scope/, then a lowercase name (npm's own rules for new packages),
# then @ and an exact semver version (a pre-release tag allowed, no ranges, no tags).
_NPM = re.compile(r"^(?P<name>(?:@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*)"
                  r"@(?P<version>[0-9]+\.[0-9]+\.[0-9]+(?:-[0-9A-Za-z.-]+)?)$")
NPM_RULE = "an npm package pinned to an exact version, NAME@X.Y.Z (e.g. @openai/codex@0.171.0)"

# PyPI: a distribution name (PEP 508), == and an exact release (PEP 440 characters only).
_PIP = re.compile(r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)"
                  r"==(?P<version>[0-9][0-9A-Za-z.!+]*)$")
PIP_RULE = "a PyPI distribution pinned to an exact version, NAME==X.Y.Z (e.g. aider-chat==0.86.2)"


@dataclass(frozen=True, order=True)
class NpmPackage:
    """One global npm package: installed with `npm install -g`, its bin files in /usr/local/bin."""

    name: str
    version: str

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True, order=True)
class PipPackage:
    """One Python application: a venv of its own under /opt, its entry points linked into
    /usr/local/bin (what pipx does, without pipx's state in root's home)."""

    name: str  # normalised (PEP 503): lowercase, runs of -_. as one -
    version: str

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"


def parse_npm_spec(text: str) -> NpmPackage:
    match = _NPM.match(text)
    if match is None:
        raise InvalidInput(f"{text!r} is not {NPM_RULE}",
                           hint="find the version with `npm view NAME version`")
    return NpmPackage(name=match["name"], version=match["version"])


def parse_pip_spec(text: str) -> PipPackage:
    match = _PIP.match(text)
    if match is None:
        raise InvalidInput(f"{text!r} is not {PIP_RULE}",
                           hint="find the version with `pip index versions NAME`")
    name = re.sub(r"[-_.]+", "-", match["name"]).lower()
    return PipPackage(name=name, version=match["version"])
