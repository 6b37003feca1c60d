"""cloud-init user-data: golden files, merge rules, and the parts no template may override.

Regenerate the golden files after an intended change with AGENTBOX_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentbox.errors import ConfigError, InvalidInput
from agentbox.model.template import CloudInitSpec
from agentbox.provision.cloudinit import (
    GUEST_USER,
    build_user_data,
    load_fragments,
    render_meta_data,
    render_user_data,
)
from agentbox.provision.keys import KeyPair
from agentbox.services.shares import GUEST_SHARES

REPO = Path(__file__).resolve().parents[2]
FRAGMENTS = REPO / "cloud-init"
GOLDEN = Path(__file__).parent / "golden"

# Fixed test-only keys, so the golden files are stable.
HOST_KEY = KeyPair(
    private_openssh=(
        "-----BEGIN OPENSSH PRIVATE KEY-----\n"
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtz\n"
        "c2gtZWQyNTUxOQAAACAscthw7AZtJ4yiDrSgJj/GShM3OrEU+aPS0BbzQCItAAAA\n"
        "AIjSHo950h6PeQAAAAtzc2gtZWQyNTUxOQAAACAscthw7AZtJ4yiDrSgJj/GShM3\n"
        "OrEU+aPS0BbzQCItAAAAAEDvBrIN6gD6jDIYcj7641DG/1PYinNekDqgUgukj091\n"
        "2Sxy2HDsBm0njKIOtKAmP8ZKEzc6sRT5o9LQFvNAIi0AAAAAAAECAwQF\n"
        "-----END OPENSSH PRIVATE KEY-----\n"
    ),
    public_openssh=(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICxy2HDsBm0njKIOtKAmP8ZKEzc6sRT5o9LQFvNAIi0A"
        " agentbox-host-golden"
    ),
)
CLIENT_PUBLIC = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID7bS1WQgeMHzsSRk1uz1V5axwZgZPn4RcvmlA0xzbiD agentbox-client-golden"
)

DEVTOOLS_FRAGMENT = """\
# a template's own fragment
bootcmd: [echo early]
runcmd:
  - [sh, -c, "echo from fragment"]
apt:
  conf: |
    Acquire::Retries "3";
"""


def _build(spec: CloudInitSpec, fragments_dir: Path = FRAGMENTS) -> dict[str, Any]:
    return build_user_data(
        spec=spec,
        fragments_dir=fragments_dir,
        hostname="demo",
        authorized_key=CLIENT_PUBLIC,
        host_key=HOST_KEY,
    )


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("AGENTBOX_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} missing: run with AGENTBOX_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(encoding="utf-8")


@pytest.fixture
def fragments_dir(tmp_path: Path) -> Path:
    """The repo's base fragment plus a template fragment, in a directory of their own."""
    shutil.copy(FRAGMENTS / "base.yaml", tmp_path / "base.yaml")
    (tmp_path / "devtools.yaml").write_text(DEVTOOLS_FRAGMENT)
    return tmp_path


def test_golden_default_user_data() -> None:
    text = render_user_data(user_data=_build(CloudInitSpec()))
    assert text.startswith("#cloud-config\n")
    _check_golden("user-data-default.yaml", text)


def test_golden_user_data_with_template_parts(fragments_dir: Path) -> None:
    spec = CloudInitSpec(
        fragments=("devtools",),
        runcmd=("echo inline",),
        write_files=({"path": "/etc/motd", "content": "agentbox workspace\n"},),
    )
    _check_golden("user-data-template.yaml", render_user_data(user_data=_build(spec, fragments_dir)))


def test_rendered_text_round_trips() -> None:
    data = _build(CloudInitSpec(runcmd=("echo inline",)))
    text = render_user_data(user_data=data)
    assert yaml.safe_load(text) == data
    # The host key stays a readable block, exactly as generated.
    assert "ed25519_private: |\n    -----BEGIN OPENSSH PRIVATE KEY-----" in text


def test_meta_data() -> None:
    text = render_meta_data(instance_id="agentbox-demo-1234", hostname="demo")
    assert yaml.safe_load(text) == {"instance-id": "agentbox-demo-1234", "local-hostname": "demo"}


def test_owned_parts() -> None:
    data = _build(CloudInitSpec())
    assert data["users"] == [
        {
            "name": GUEST_USER,
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "shell": "/bin/bash",
            "lock_passwd": True,
            "ssh_authorized_keys": [CLIENT_PUBLIC],
        }
    ]
    assert data["ssh_keys"] == {
        "ed25519_private": HOST_KEY.private_openssh,
        "ed25519_public": HOST_KEY.public_openssh,
    }
    assert data["ssh_deletekeys"] is True
    assert data["ssh_genkeytypes"] == ["ed25519"]  # never another key type
    assert data["ssh_pwauth"] is False
    assert data["disable_root"] is True
    assert (data["hostname"], data["fqdn"], data["preserve_hostname"]) == ("demo", "demo", False)


def test_base_defaults_need_no_network() -> None:
    data = _build(CloudInitSpec())
    assert data["package_update"] is False
    assert data["package_upgrade"] is False
    assert "packages" not in data
    assert data["timezone"] == "UTC"


def test_template_cannot_override_owned_keys(fragments_dir: Path) -> None:
    (fragments_dir / "evil.yaml").write_text(
        yaml.safe_dump(
            {
                "users": ["default", {"name": "intruder", "plain_text_passwd": "x", "lock_passwd": False}],
                "ssh_keys": {"ed25519_private": "other", "ed25519_public": "other"},
                "ssh_genkeytypes": ["rsa"],
                "ssh_deletekeys": False,
                "ssh_pwauth": True,
                "disable_root": False,
                "hostname": "elsewhere",
                "preserve_hostname": True,
                "ssh_authorized_keys": ["ssh-ed25519 AAAA stranger"],
                "chpasswd": {"expire": False, "users": [{"name": "agent", "password": "x"}]},
                "password": "x",
                "ssh_import_id": ["gh:someone"],
            }
        )
    )
    data = _build(CloudInitSpec(fragments=("evil",)), fragments_dir)
    assert data == _build(CloudInitSpec(), fragments_dir)


def test_merge_order_and_rules(fragments_dir: Path) -> None:
    (fragments_dir / "more.yaml").write_text(
        "bootcmd: [echo later]\napt:\n  conf: override\ntimezone: Europe/Berlin\n"
    )
    spec = CloudInitSpec(fragments=("devtools", "more"), runcmd=("echo inline",))
    data = _build(spec, fragments_dir)
    assert data["bootcmd"] == ["echo early", "echo later"]  # lists concatenate in order
    assert data["runcmd"] == [["sh", "-c", "echo from fragment"], "echo inline"]  # inline last
    assert data["apt"]["preserve_sources_list"] is True  # mappings merge recursively
    assert data["apt"]["conf"] == "override"  # scalars: the later one wins
    assert data["timezone"] == "Europe/Berlin"


def test_base_is_merged_once_even_when_listed(fragments_dir: Path) -> None:
    once = _build(CloudInitSpec(), fragments_dir)
    assert _build(CloudInitSpec(fragments=("base", "base.yaml")), fragments_dir) == once


def test_spec_is_not_mutated(fragments_dir: Path) -> None:
    item = {"path": "/etc/x", "content": "x"}
    spec = CloudInitSpec(fragments=("devtools",), write_files=(item,))
    data = _build(spec, fragments_dir)
    data["write_files"][-1]["path"] = "/changed"
    assert item == {"path": "/etc/x", "content": "x"}


def test_missing_fragment_names_the_file(fragments_dir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _build(CloudInitSpec(fragments=("nope",)), fragments_dir)
    assert str(fragments_dir / "nope.yaml") in info.value.message
    assert "devtools" in (info.value.hint or "")


def test_bad_yaml_names_file_and_line(fragments_dir: Path) -> None:
    (fragments_dir / "broken.yaml").write_text("bootcmd:\n  - git\n runcmd: [\n")
    with pytest.raises(ConfigError) as info:
        load_fragments(fragments_dir=fragments_dir, names=["broken"])
    assert f"{fragments_dir / 'broken.yaml'}:3" in info.value.message


def test_fragment_must_be_a_mapping(fragments_dir: Path) -> None:
    (fragments_dir / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"list\.yaml:1: a cloud-init fragment must be a mapping"):
        load_fragments(fragments_dir=fragments_dir, names=["list"])


def test_empty_fragment_is_fine(fragments_dir: Path) -> None:
    (fragments_dir / "empty.yaml").write_text("# nothing yet\n")
    assert load_fragments(fragments_dir=fragments_dir, names=["empty"]) == {}


def test_conflicting_kinds_are_an_error(fragments_dir: Path) -> None:
    (fragments_dir / "scalar.yaml").write_text("\n\nbootcmd: git\n")
    with pytest.raises(ConfigError) as info:
        load_fragments(fragments_dir=fragments_dir, names=["devtools", "scalar"])
    assert f"{fragments_dir / 'scalar.yaml'}:3: bootcmd: cannot merge" in info.value.message


@pytest.mark.parametrize("name", ["../base", "sub/base", "", ".hidden"])
def test_fragment_names_are_not_paths(fragments_dir: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="invalid cloud-init fragment name"):
        load_fragments(fragments_dir=fragments_dir, names=[name])


def test_authorized_key_must_be_one_line() -> None:
    with pytest.raises(InvalidInput):
        build_user_data(
            spec=CloudInitSpec(),
            fragments_dir=FRAGMENTS,
            hostname="demo",
            authorized_key=CLIENT_PUBLIC + "\nssh-ed25519 AAAA other",
            host_key=HOST_KEY,
        )


def test_shipped_fragments_load() -> None:
    names = [p.stem for p in sorted(FRAGMENTS.glob("*.yaml"))]
    assert "base" in names
    for name in names:
        load_fragments(fragments_dir=FRAGMENTS, names=[name])


def test_empty_values_change_nothing(fragments_dir: Path) -> None:
    (fragments_dir / "blank.yaml").write_text("packages:\nbootcmd:\ntimezone:\napt:\n  conf:\n")
    assert load_fragments(fragments_dir=fragments_dir, names=["devtools", "blank"]) == load_fragments(
        fragments_dir=fragments_dir, names=["devtools"]
    )
    assert "packages" not in load_fragments(fragments_dir=fragments_dir, names=["blank"])


def test_a_fragment_with_packages_is_refused_at_its_line(fragments_dir: Path) -> None:
    # cloud-init would try them at first boot, when the guest has no way out: they belong
    # to the image build, and the error says so where the fragment lists them.
    (fragments_dir / "tools.yaml").write_text("timezone: UTC\npackages: [git]\n")
    with pytest.raises(ConfigError) as info:
        _build(CloudInitSpec(fragments=("tools",)), fragments_dir)
    assert f"{fragments_dir / 'tools.yaml'}:2: packages:" in info.value.message
    assert "image" in (info.value.hint or "") and "packages" in (info.value.hint or "")


def test_claude_code_starts_at_its_prompt_in_any_share_and_in_the_home() -> None:
    # Its onboarding would call Anthropic directly and its folder-trust question would come
    # back after every reset: the agents fragment answers both for the guest user.
    data = _build(CloudInitSpec(fragments=("agents",)))
    entry = next(f for f in data["write_files"] if f["path"] == f"/home/{GUEST_USER}/.claude.json")
    config = json.loads(entry["content"])
    assert config["hasCompletedOnboarding"] is True
    trusted = {folder for folder, project in config["projects"].items() if project["hasTrustDialogAccepted"]}
    assert trusted == {GUEST_SHARES, f"/home/{GUEST_USER}"}
    assert (entry["owner"], entry["permissions"]) == (f"{GUEST_USER}:{GUEST_USER}", "0600")
