"""The secret scan before sharing: each rule finds what it is for, names the file and the
rule and never the secret, and leaves ordinary files alone. Token-shaped values are built
from pieces here, so that this file itself holds none."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentbox.host.secret_scan import scan_folder

A = "A" * 40
PEM = "-----BEGIN " + "OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----\n"
CASES = {
    ".env": ("API_KEY=hunter2\n", "dotenv file"),
    "app/.env.production": ("X=1\n", "dotenv file"),
    "keys/deploy.pem": (PEM.replace("OPENSSH ", "RSA "), "private key (PEM/OpenSSH)"),
    "home/.ssh/id_ed25519": (PEM, "SSH private key file"),
    "notes/key.txt": (PEM, "private key (PEM/OpenSSH)"),
    ".aws/credentials": ("[default]\naws_secret_access_key = x\n", "AWS credentials file"),
    "gcp/sa.json": ('{"type": "service_account", "project_id": "p", "private_key": "x"}', "gcloud service account key"),
    ".config/gcloud/application_default_credentials.json": ("{}", "gcloud credentials"),
    ".git/config": ('[remote "origin"]\n\turl = https://' + "x-access-token:" + "t0ken@github.com/o/r.git\n",
                    "token in a git remote URL"),
    ".npmrc": ("//registry.npmjs.org/:_authToken=${NPM}\n", "npm auth token"),
    ".netrc": ("machine example.com login me password s3cret\n", "netrc password"),
    "src/settings.py": ("KEY = '" + "AKIA" + "ABCDEFGHIJKLMNOP'\n", "AWS access key id"),
    "ci.yml": ("token: " + "ghp_" + A + "\n", "GitHub token"),
    "docs/slack.md": ("xoxb-" + "1234567890-abcdef\n", "Slack token"),
    "conf/anthropic.toml": ("key = 'sk-ant-" + "api03-" + A + "'\n", "Anthropic API key"),
    ".git-credentials": ("https://me:pw@example.com\n", "git credentials file"),
}
HARMLESS = {
    ".env.example": "API_KEY=\n",
    "README.md": "Set AWS keys in ~/.aws/credentials; never commit a -----BEGIN line.\n",
    "certs/ca.pem": "-----BEGIN " + "CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    ".git/config": '[remote "origin"]\n\turl = https://github.com/o/r.git\n',
    ".npmrc": "registry=https://registry.npmjs.org/\n",
    "home/.ssh/id_ed25519.pub": "ssh-ed25519 AAAA me@host\n",
    "package-lock.json": '{"integrity": "sha512-' + A + '"}\n',
}


def write(root: Path, files: dict[str, str]) -> None:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)


@pytest.mark.parametrize("path", sorted(CASES))
def test_each_rule_finds_its_secret_by_file_and_rule_only(tmp_path: Path, path: str) -> None:
    content, rule = CASES[path]
    write(tmp_path, {path: content, "ordinary.txt": "hello\n"})
    scan = scan_folder(source=tmp_path)
    assert [(f.path, f.rule) for f in scan.findings] == [(path, rule)]
    assert scan.paths == (path,) and scan.complete and scan.files == 2
    secretish = [part for part in content.split() if len(part) > 12]
    assert not any(part in scan.summary() for part in secretish), "the secret itself is never shown"


def test_ordinary_files_that_look_similar_are_not_findings(tmp_path: Path) -> None:
    write(tmp_path, HARMLESS)
    assert scan_folder(source=tmp_path).findings == ()


def test_links_fifos_and_git_objects_are_not_followed_or_read(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside, {".env": "X=1\n"})
    shared = tmp_path / "shared"
    write(shared, {".git/objects/ab/cdef": "ghp_" + A})
    (shared / "linked").symlink_to(outside, target_is_directory=True)
    os.mkfifo(shared / "pipe")
    scan = scan_folder(source=shared)
    assert scan.findings == () and scan.files == 1


def test_a_folder_over_the_file_limit_says_the_scan_is_incomplete(tmp_path: Path) -> None:
    write(tmp_path, {f"f{n}.txt": "x" for n in range(5)} | {"z/.env": "X=1\n"})
    scan = scan_folder(source=tmp_path, max_files=3)
    assert not scan.complete and scan.files == 3
