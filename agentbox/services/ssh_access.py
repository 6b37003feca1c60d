"""How agentbox reaches a workspace over SSH: the pinned target, and the system ssh's argv
(through the workspace's own config from stores/ssh_config.py)."""

from __future__ import annotations

from collections.abc import Sequence

from agentbox.model.guest import GUEST_USER
from agentbox.remote.ssh import SshTarget
from agentbox.stores.records import WorkspaceFiles, WorkspaceRecord
from agentbox.stores.ssh_config import LOOPBACK, alias


def ssh_target(*, record: WorkspaceRecord, files: WorkspaceFiles) -> SshTarget:
    return SshTarget(host=LOOPBACK, port=record.ssh_port, user=GUEST_USER,
                     private_key=files.client_key, host_key=record.host_key_public, jump=record.jump)


def ssh_argv(*, record: WorkspaceRecord, files: WorkspaceFiles, command: Sequence[str],
             tty: bool = False) -> list[str]:
    """A shell (no command) always gets a TTY; a command gets one with `tty` (an agent)."""
    argv = ["ssh", "-F", str(files.ssh_config)]
    if tty or not command:
        argv.append("-t")
    return [*argv, alias(record.name), *command]
