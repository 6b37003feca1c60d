"""The SSH client files of workspaces: each workspace's own config and known_hosts (its
pinned host key), and the managed ~/.ssh/config.d/agentbox include, so `ssh agentbox-NAME`
works for agents and editors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agentbox.config.atomic_file import write_atomically
from agentbox.model.guest import GUEST_USER
from agentbox.model.remote_host import JumpHost
from agentbox.stores.records import WorkspaceFiles, WorkspaceRecord

LOOPBACK = "127.0.0.1"
MANAGED_CONFIG = "config.d/agentbox"


def alias(name: str) -> str:
    return f"agentbox-{name}"


def jump_alias(name: str) -> str:
    return f"agentbox-{name}-host"


def host_block(*, record: WorkspaceRecord, files: WorkspaceFiles) -> str:
    # HostKeyAlias pins the key to the workspace, not to a loopback port another
    # workspace may reuse later; StrictHostKeyChecking=yes refuses any other key.
    jump = record.jump
    return "\n".join([
        *(_jump_block(name=record.name, jump=jump) if jump is not None else ()),
        f"Host {alias(record.name)}",
        f"  HostName {LOOPBACK}",
        f"  Port {record.ssh_port}",
        f"  User {GUEST_USER}",
        f"  IdentityFile {files.client_key}",
        "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {files.known_hosts}",
        f"  HostKeyAlias {alias(record.name)}",
        "  StrictHostKeyChecking yes",
        "  UpdateHostKeys no",
        "  PasswordAuthentication no",
        "  LogLevel ERROR",
        # The guest's host forward listens on the remote libvirt host's loopback.
        *((f"  ProxyJump {jump_alias(record.name)}",) if jump is not None else ()),
        "",
    ])


def _jump_block(*, name: str, jump: JumpHost) -> list[str]:
    """The libvirt host as a jump host of its own (OpenSSH passes `-F` on to the jump)."""
    return [
        f"Host {jump_alias(name)}",
        f"  HostName {jump.host}",
        f"  Port {jump.port}",
        *((f"  User {jump.user}",) if jump.user else ()),
        *((f"  IdentityFile {jump.key}", "  IdentitiesOnly yes") if jump.key else ()),
        f"  UserKnownHostsFile {jump.known_hosts}",
        "  StrictHostKeyChecking yes",
        "  ForwardAgent no",
        "  LogLevel ERROR",
        "",
    ]


def write_workspace_ssh_files(*, record: WorkspaceRecord, files: WorkspaceFiles) -> None:
    _write_private(files.known_hosts, f"{alias(record.name)} {record.host_key_public}\n")
    _write_private(files.ssh_config, host_block(record=record, files=files))


@dataclass(frozen=True)
class ManagedSshConfig:
    path: Path
    workspaces: tuple[str, ...]
    included: bool  # whether ~/.ssh/config already includes the managed file
    include_line: str


def write_managed_ssh_config(
    *, ssh_dir: Path, entries: Sequence[tuple[WorkspaceRecord, WorkspaceFiles]]
) -> ManagedSshConfig:
    path = ssh_dir / MANAGED_CONFIG
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    header = "# Managed by agentbox (agentbox ssh-config); edits are overwritten.\n\n"
    _write_private(path, header + "\n".join(host_block(record=r, files=f) for r, f in entries))
    include_line = f"Include {path}"
    main_config = ssh_dir / "config"
    text = main_config.read_text(encoding="utf-8") if main_config.exists() else ""
    included = any(
        line.strip().lower().startswith("include") and ("config.d/agentbox" in line or "config.d/*" in line)
        for line in text.splitlines()
    )
    return ManagedSshConfig(path=path, workspaces=tuple(r.name for r, _ in entries),
                            included=included, include_line=include_line)


def _write_private(path: Path, text: str) -> None:
    write_atomically(path=path, data=text.encode())  # 0600, no fixed temp name
