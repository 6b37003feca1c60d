"""Workspaces: one VM each, described by a record agentbox owns."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from agentbox.model.template import Resources


class WorkspaceState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    CREATING = "creating"
    BROKEN = "broken"  # half-created or half-destroyed: `destroy` removes it


class StandbyState(StrEnum):
    """A paused clean copy for fast resets (services/standby.py)."""

    OFF = "off"
    READY = "ready"  # the next reset is a swap to it
    WAITING = "waiting"  # on, but the copy is made at the next reset (or start)


class BackendKind(StrEnum):
    """Which hypervisor driver runs a workspace; a workspace stays on the one that made it."""

    LIBVIRT = "libvirt"
    QEMU = "qemu"  # QEMU driven directly, no daemon (backends/qemu)


class Accel(StrEnum):
    AUTO = "auto"
    KVM = "kvm"
    TCG = "tcg"
    HVF = "hvf"  # macOS Hypervisor.framework (the QEMU backend on a Mac)


@dataclass(frozen=True)
class Workspace:
    """What `list` shows and what every command looks up by name."""

    name: str
    state: WorkspaceState
    template: str
    created: str  # ISO 8601, UTC
    ssh_port: int
    resources: Resources
    domain: str
    image_id: str
    problem: str = ""  # why it is broken, when it is
    backend: BackendKind = BackendKind.LIBVIRT
    host: str = ""  # the remote libvirt host it runs on ("HOST" or "HOST:PORT"); "" for this machine
    standby: StandbyState = StandbyState.OFF
    # The host budget that paused its guest (on_exceeded: pause), while paused by it:
    # `agentbox budget NAME --resume` lets it run again.
    paused_by: str = ""
