"""What a likely secret looks like in a folder about to be shared: rules on a file's path
and on its content. Pure: the walk that reads files is `agentbox.host.secret_scan`.

A finding names the file and the rule, never the secret. The rules aim at what leaks in
practice (dotenv files, private keys, cloud and registry credentials, tokens in git
remotes, well-known token formats); they are not an entropy scanner, which flags every hash
and lock file. detect-secrets was considered: its last release is from 2024, it brings
`requests`, and its line plugins need the same path rules around them anyway.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class SecretFinding:
    path: str  # inside the shared folder, '/'-separated
    rule: str  # the rule that matched: never the matched text

    def render(self) -> str:
        return f"{self.path} ({self.rule})"


@dataclass(frozen=True)
class SecretScan:
    findings: tuple[SecretFinding, ...] = ()
    files: int = 0  # regular files looked at
    complete: bool = True  # False: the walk stopped at its file limit (the rest was not looked at)

    @property
    def paths(self) -> tuple[str, ...]:
        """The files with a finding, each once, sorted."""
        return tuple(sorted({f.path for f in self.findings}))

    def summary(self, *, limit: int = 8) -> str:
        shown = "; ".join(f.render() for f in self.findings[:limit])
        more = f"; and {len(self.findings) - limit} more" if len(self.findings) > limit else ""
        return shown + more


_DOTENV_SAFE = (".example", ".sample", ".template", ".dist", ".defaults")
_KEY_FILES = frozenset({"id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "id_ecdsa_sk", "id_ed25519_sk"})
_KEY_SUFFIXES = (".p12", ".pfx", ".jks", ".keystore", ".ppk")
_GCLOUD_FILES = frozenset({"credentials.db", "access_tokens.db", "application_default_credentials.json"})


def _base(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _is_dotenv(path: str) -> bool:
    name = _base(path)
    if name == ".env" or name.endswith(".env"):
        return True
    return name.startswith(".env.") and not name.endswith(_DOTENV_SAFE)


# Rules on the path alone: the file is a secret by what it is.
PATH_RULES: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("dotenv file", _is_dotenv),
    ("SSH private key file", lambda p: _base(p) in _KEY_FILES),
    ("key store file", lambda p: _base(p).lower().endswith(_KEY_SUFFIXES)),
    ("AWS credentials file", lambda p: p == ".aws/credentials" or p.endswith("/.aws/credentials")),
    ("gcloud credentials", lambda p: ("gcloud/" in p or p.startswith("gcloud")) and (
        _base(p) in _GCLOUD_FILES or "/legacy_credentials/" in f"/{p}")),
    ("git credentials file", lambda p: _base(p) == ".git-credentials"),
)

_ANYWHERE: Callable[[str], bool] = lambda p: True  # noqa: E731 - a rule that applies to every text file

# Rules on the content: (rule, where it applies, pattern). Patterns are bytes, compiled once.
CONTENT_RULES: tuple[tuple[str, Callable[[str], bool], re.Pattern[bytes]], ...] = (
    ("private key (PEM/OpenSSH)", _ANYWHERE,
     re.compile(rb"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----")),
    ("PuTTY private key", _ANYWHERE, re.compile(rb"PuTTY-User-Key-File-\d")),
    ("gcloud service account key", lambda p: p.endswith(".json"),
     re.compile(rb'"type"\s*:\s*"service_account"[\s\S]{0,4000}"private_key"|'
                rb'"private_key"[\s\S]{0,4000}"type"\s*:\s*"service_account"')),
    ("token in a git remote URL", lambda p: p == ".git/config" or p.endswith("/.git/config"),
     re.compile(rb"url\s*=\s*[a-z][a-z0-9+.-]*://[^\s/@]+@", re.IGNORECASE)),
    ("npm auth token", lambda p: _base(p) == ".npmrc", re.compile(rb"_authToken\s*=|_auth\s*=|_password\s*=")),
    ("netrc password", lambda p: _base(p) in (".netrc", "_netrc"), re.compile(rb"(?:^|\s)password\s+\S")),
    ("pypirc password", lambda p: _base(p) == ".pypirc", re.compile(rb"(?m)^\s*password\s*[=:]\s*\S")),
    ("docker registry auth", lambda p: p.endswith(".docker/config.json"), re.compile(rb'"auth"\s*:\s*"[^"]+')),
    ("AWS access key id", _ANYWHERE, re.compile(rb"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("GitHub token", _ANYWHERE, re.compile(rb"\bgh[pousr]_[A-Za-z0-9]{36,}\b|\bgithub_pat_[A-Za-z0-9_]{40,}")),
    ("GitLab token", _ANYWHERE, re.compile(rb"\bglpat-[A-Za-z0-9_-]{20,}")),
    ("Slack token", _ANYWHERE, re.compile(rb"\bxox[abprs]-[A-Za-z0-9-]{10,}")),
    ("Stripe live key", _ANYWHERE, re.compile(rb"\b[sr]k_live_[A-Za-z0-9]{20,}")),
    ("Anthropic API key", _ANYWHERE, re.compile(rb"\bsk-ant-[A-Za-z0-9_-]{32,}")),
    ("OpenAI API key", _ANYWHERE, re.compile(rb"\bsk-(?:proj-|svcacct-)?[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}"
                                             rb"|\bsk-proj-[A-Za-z0-9_-]{40,}")),
    ("Google API key", _ANYWHERE, re.compile(rb"\bAIza[0-9A-Za-z_-]{35}\b")),
    ("PyPI token", _ANYWHERE, re.compile(rb"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}")),
    ("npm token", _ANYWHERE, re.compile(rb"\bnpm_[A-Za-z0-9]{36}\b")),
)


def path_findings(*, path: str) -> tuple[SecretFinding, ...]:
    return tuple(SecretFinding(path=path, rule=rule) for rule, applies in PATH_RULES if applies(path))


def content_findings(*, path: str, content: bytes) -> tuple[SecretFinding, ...]:
    """The content rules that match `content` (the start of the file at `path`), one finding each."""
    return tuple(SecretFinding(path=path, rule=rule) for rule, applies, pattern in CONTENT_RULES
                 if applies(path) and pattern.search(content))
