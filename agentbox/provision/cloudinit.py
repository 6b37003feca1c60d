"""cloud-init user-data and meta-data for one workspace.

The user-data is built as a dict (fragments from `cloud-init/`, then the template's inline
additions, then the parts agentbox owns) and only then rendered with `yaml.safe_dump`, so
no value can break out of its place the way string templating would let it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from agentbox.config.yaml_source import YamlDoc, load_yaml_file
from agentbox.errors import ConfigError, InvalidInput
from agentbox.model.template import CloudInitSpec
from agentbox.provision.keys import KeyPair
from agentbox.model.guest import GUEST_USER

BASE_FRAGMENT = "base"  # always merged first, whether or not a template lists it

# Set by agentbox after all merging: a template that sets them is overridden, because they
# decide who can log in and which host key the guest presents (and which one is pinned).
OWNED_KEYS = (
    "users",
    "ssh_keys",
    "ssh_deletekeys",
    "ssh_genkeytypes",
    "ssh_pwauth",
    "disable_root",
    "hostname",
    "fqdn",
    "preserve_hostname",
)
# Dropped from templates: each would open another way in besides the workspace key.
REMOVED_KEYS = ("password", "chpasswd", "ssh_authorized_keys", "ssh_import_id")
_MERGE_HINT = "use the same kind of value (mapping, list or single value) in every fragment"

# Builds the error for a merge conflict at a key path (fragments know their file:line).
ConflictError = Callable[[tuple[str, ...], str], ConfigError]


def load_fragments(*, fragments_dir: Path, names: Sequence[str]) -> dict[str, Any]:
    """Load the named fragments (`NAME` or `NAME.yaml`) and merge them in order.

    Mappings merge recursively, lists concatenate, any other value is replaced by the later
    fragment. A missing, unreadable or invalid fragment is a ConfigError naming its file.
    """
    merged: dict[str, Any] = {}
    for name in names:
        path = fragment_path(fragments_dir=fragments_dir, name=name)
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in fragments_dir.glob("*.yaml"))) or "none"
            raise ConfigError(
                f"{path}: cloud-init fragment {name!r} not found",
                hint=f"fragments available in {fragments_dir}: {known}",
            )
        doc = load_yaml_file(path=path)
        if doc.value is None:
            continue
        if not isinstance(doc.value, dict):
            raise ConfigError(f"{path}:{doc.line_of(())}: a cloud-init fragment must be a mapping")
        if doc.value.get("packages"):
            # cloud-init installs them at first boot, before the guest has any way out: they
            # could only fail. The template's image lists them and the image build installs them.
            raise doc.error(("packages",), "cloud-init cannot install packages: the guest has no network "
                            "while cloud-init runs",
                            hint="list them in the template under `image:` as `packages: [...]` "
                            "(installed when the image is built)")
        _merge_into(
            target=merged,
            source=doc.value,
            conflict=_located_in(doc),
            key_path=(),
        )
    return merged


def _located_in(doc: YamlDoc) -> ConflictError:
    """Merge conflicts inside fragment `doc` are reported at their file:line."""

    def conflict(key_path: tuple[str, ...], message: str) -> ConfigError:
        return doc.error(key_path, message, hint=_MERGE_HINT)

    return conflict


def fragment_path(*, fragments_dir: Path, name: str) -> Path:
    """The file of fragment `name`; names are plain file names, never paths."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ConfigError(
            f"invalid cloud-init fragment name {name!r}",
            hint=f"use the name of a .yaml file in {fragments_dir}, e.g. 'base'",
        )
    return fragments_dir / (name if name.endswith(".yaml") else f"{name}.yaml")


def build_user_data(
    *,
    spec: CloudInitSpec,
    fragments_dir: Path,
    hostname: str,
    authorized_key: str,
    host_key: KeyPair,
) -> dict[str, Any]:
    """The complete cloud-config for one workspace, as data."""
    if not authorized_key.strip() or any(ch in authorized_key for ch in "\r\n"):
        raise InvalidInput("the workspace's authorized key must be one non-empty line")
    names = [BASE_FRAGMENT] + [n for n in spec.fragments if n.removesuffix(".yaml") != BASE_FRAGMENT]
    data = load_fragments(fragments_dir=fragments_dir, names=names)
    inline: dict[str, Any] = {
        "runcmd": list(spec.runcmd),
        "write_files": [copy.deepcopy(dict(item)) for item in spec.write_files],
    }
    _merge_into(
        target=data,
        source={k: v for k, v in inline.items() if v},
        conflict=lambda key_path, message: ConfigError(
            f"template cloud_init.{'.'.join(key_path)}: {message}", hint=_MERGE_HINT
        ),
        key_path=(),
    )
    for key in OWNED_KEYS + REMOVED_KEYS:
        data.pop(key, None)
    data.update(_owned_part(hostname=hostname, authorized_key=authorized_key, host_key=host_key))
    return data


def _owned_part(*, hostname: str, authorized_key: str, host_key: KeyPair) -> dict[str, Any]:
    return {
        "hostname": hostname,
        "fqdn": hostname,
        "preserve_hostname": False,
        "users": [
            {
                "name": GUEST_USER,
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "shell": "/bin/bash",
                "lock_passwd": True,
                "ssh_authorized_keys": [authorized_key],
            }
        ],
        "disable_root": True,
        "ssh_pwauth": False,
        # Delete whatever host keys the image has and install ours: the guest's only host
        # key is the one generated on the host and pinned there. cloud-init generates no
        # keys when `ssh_keys` is given; `ssh_genkeytypes` names only the type we supply
        # (and cloud-init never overwrites an existing key file) because its schema
        # rejects an empty list.
        "ssh_deletekeys": True,
        "ssh_genkeytypes": ["ed25519"],
        "ssh_keys": {
            "ed25519_private": host_key.private_openssh,
            "ed25519_public": host_key.public_openssh,
        },
    }


def render_user_data(*, user_data: dict[str, Any]) -> str:
    """`#cloud-config` followed by the data as safe YAML, keys in build order."""
    body = yaml.dump(
        user_data,
        Dumper=_BlockDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1 << 16,  # never fold a key or command line across lines
    )
    return "#cloud-config\n" + body


def render_meta_data(*, instance_id: str, hostname: str) -> str:
    """NoCloud meta-data. cloud-init runs its once-per-instance modules when the id changes."""
    return yaml.safe_dump({"instance-id": instance_id, "local-hostname": hostname}, sort_keys=False)


class _BlockDumper(yaml.SafeDumper):
    """SafeDumper that writes multi-line strings (keys, scripts) as readable `|` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def _merge_into(
    *, target: dict[str, Any], source: dict[str, Any], conflict: ConflictError, key_path: tuple[str, ...]
) -> None:
    """Merge `source` into `target`: mappings recursively, lists concatenated, else replaced.

    An empty value (`key:` with nothing) neither adds nor removes anything.
    """
    for key, value in source.items():
        if value is None:
            continue
        value = copy.deepcopy(value)
        old = target.get(key)
        if old is None:
            target[key] = value
        elif isinstance(old, dict) and isinstance(value, dict):
            _merge_into(target=old, source=value, conflict=conflict, key_path=(*key_path, str(key)))
        elif isinstance(old, list) and isinstance(value, list):
            old.extend(value)
        elif isinstance(old, (dict, list)) or isinstance(value, (dict, list)):
            raise conflict(
                (*key_path, str(key)),
                f"cannot merge a {_kind(value)} into the {_kind(old)} from an earlier fragment",
            )
        else:
            target[key] = value


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return "scalar"
