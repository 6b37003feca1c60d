"""The Backend Protocol every hypervisor implements, and the data it speaks.

A backend knows domains (VMs) and their disks; it knows nothing of templates, keys or
cloud-init. It only ever lists and touches domains that carry agentbox's metadata with
this installation's owner tag.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from agentbox.errors import InvalidInput
from agentbox.model.workspace import Accel

DISK_FORMATS = frozenset({"qcow2", "raw"})


class DomainState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    CRASHED = "crashed"
    OTHER = "other"


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, so services pick a path instead of failing half-way."""

    ram_snapshots: bool
    hotplug: bool
    accel: Accel  # the accelerator new domains will use (never AUTO here)
    uri: str
    libvirt_version: int = 0  # e.g. 9000000; 0 when unknown (and for backends without libvirt)
    virtiofs: bool = True  # folders can be shared live (virtiofs); else shares are copy disks
    evidence: bool = False  # can pause a guest and save its RAM and a point-in-time copy of its disk
    # A running guest's RAM can be saved to a file and restored into another domain of the
    # same shape (warm clones). False: create always cold boots.
    memory_restore: bool = False
    # A running guest's CPU time and disk writes can be read (`usage`), for the per-session
    # budgets; False: those budgets cannot be enforced there and say so.
    usage_stats: bool = False
    # A paused copy of a workspace's clean state can stand by in a second domain and take
    # over its SSH port at a reset (services/standby.py). False: resets revert in place.
    standby: bool = False


@dataclass(frozen=True)
class DiskSpec:
    path: Path
    format: str  # "qcow2" | "raw"
    readonly: bool = False
    serial: str = ""


@dataclass(frozen=True)
class FilesystemSpec:
    """A host folder exported into the guest (virtiofs or 9p), attached to a running VM."""

    tag: str  # the guest mounts it by this name
    source: Path
    driver: str  # "virtiofs" | "9p"
    readonly: bool  # the hypervisor enforces read-only (virtiofs on libvirt >= 11, or 9p)
    virtiofsd: str = ""  # the daemon's path, for virtiofs


@dataclass(frozen=True)
class DirectKernelBoot:
    kernel: Path
    initrd: Path
    cmdline: str


@dataclass(frozen=True)
class DomainMetadata:
    """Stored in the domain's XML under agentbox's own namespace."""

    workspace: str
    owner: str  # identifies the agentbox installation (its data dir) that made it
    template: str
    created: str


@dataclass(frozen=True)
class DomainSpec:
    name: str
    metadata: DomainMetadata
    vcpus: int
    memory_mib: int
    disks: tuple[DiskSpec, ...]  # the first is the root disk
    ssh_port: int  # host 127.0.0.1:ssh_port forwards to guest port 22
    console_log: Path
    kernel_boot: DirectKernelBoot | None = None


@dataclass(frozen=True)
class SnapshotInfo:
    """An internal snapshot of a domain: disk, plus RAM when taken while it ran."""

    name: str
    created: str  # ISO 8601, UTC
    with_memory: bool  # reverting gives a running guest; else a stopped one
    description: str = ""


@dataclass(frozen=True)
class DomainInfo:
    name: str
    state: DomainState
    metadata: DomainMetadata


@dataclass(frozen=True)
class DomainUsage:
    """Counters since the domain's QEMU started (a power cycle starts them at 0 again)."""

    cpu_seconds: float  # the guest's CPU time, all vCPUs together
    disk_write_bytes: int  # bytes the guest wrote to its disks


class Backend(Protocol):
    @property
    def capabilities(self) -> Capabilities:
        """What new domains get."""

    def capabilities_of(self, *, name: str) -> Capabilities:
        """What domain `name` can do (where several backends stand behind one, its own)."""

    def define(self, *, spec: DomainSpec) -> None:
        """Define (not start) a domain. AlreadyExists if the name is taken by anyone."""

    def start(self, *, name: str) -> None: ...

    def shutdown(self, *, name: str) -> None:
        """Ask the guest to power off (ACPI); returns at once."""

    def destroy(self, *, name: str) -> None:
        """Power off at once. No error if already off."""

    def undefine(self, *, name: str) -> None:
        """Remove the definition with its snapshots and metadata. Disks stay."""

    def get(self, *, name: str) -> DomainInfo | None:
        """The domain if it exists and is ours; None otherwise."""

    def list_domains(self) -> tuple[DomainInfo, ...]:
        """Ours only: domains without our metadata and owner tag are never returned."""

    def create_snapshot(self, *, name: str, snapshot: str, description: str = "") -> SnapshotInfo:
        """An internal snapshot: with RAM if the domain runs (capability ram_snapshots),
        disk only if it is stopped. Read-only disks (the seed) are left out. AlreadyExists
        if `snapshot` exists."""

    def revert_snapshot(self, *, name: str, snapshot: str) -> None:
        """Return the domain to `snapshot`: running if it holds RAM. The caller destroys
        the domain first, so no guest cooperation is needed. NotFound if it is missing."""

    def list_snapshots(self, *, name: str) -> tuple[SnapshotInfo, ...]:
        """Oldest first."""

    def delete_snapshot(self, *, name: str, snapshot: str) -> None:
        """NotFound if it is missing."""

    def attach_filesystem(self, *, name: str, fs: FilesystemSpec) -> None:
        """Hot-plug into the running domain only: gone when QEMU restarts (revert, start)."""

    def detach_filesystem(self, *, name: str, tag: str) -> None:
        """NotFound if no such filesystem is attached."""

    def attach_disk(self, *, name: str, disk: DiskSpec) -> None:
        """Hot-plug a disk (identified by its serial) into the running domain only."""

    def detach_disk(self, *, name: str, serial: str) -> None: ...

    def attached(self, *, name: str) -> tuple[frozenset[str], frozenset[str]]:
        """Live filesystem tags and disk serials of the running domain."""

    def save_memory(self, *, name: str, path: Path) -> None:
        """Save the running domain's RAM and device state to `path` (a new file); the domain
        is stopped afterwards. Needs capability memory_restore; fails with a live virtiofs share."""

    def restore_memory(self, *, name: str, path: Path, paused: bool = False) -> None:
        """Start the defined, stopped domain `name` from the RAM saved at `path`, though it was
        saved from another domain: same devices and memory, other name, disks and SSH port.
        With `paused`, its vCPUs do not run until `resume`. Rewrites the file's header in
        place: the caller serialises restores from one file."""

    def export_disk(self, *, source: Path, target: Path, base: Path, base_format: str) -> None:
        """A new qcow2 at `target` with what the stopped domain's disk `source` holds now (not
        its snapshots), as an overlay on `base`, the image `source` itself sits on."""

    def move_ssh_port(self, *, name: str, old_port: int, new_port: int) -> None:
        """With capability standby: the guest SSH forward of domain `name` (running or paused)
        moves from 127.0.0.1:old_port to new_port, live, for its next boot and for a revert to
        any of its snapshots."""

    def drop_ssh_port(self, *, name: str, port: int) -> None:
        """With capability standby: the live domain stops listening on 127.0.0.1:port (it is
        about to be destroyed; its definition is left as it is)."""

    def create_overlay(self, *, path: Path, backing: Path, backing_format: str, size_gib: int) -> None:
        """A new qcow2 disk at `path` whose reads fall through to `backing` (never written)."""

    def delete_volume(self, *, path: Path) -> None:
        """Remove a disk file agentbox created. No error if it is already gone."""

    def pause(self, *, name: str) -> None:
        """Freeze the guest's vCPUs at once (QEMU and the devices stay). No error if paused."""

    def resume(self, *, name: str) -> None:
        """Let a paused guest run again. No error if it runs."""

    def usage(self, *, name: str) -> DomainUsage | None:
        """With capability usage_stats: the running domain's counters (None when it does
        not run). A read: no side effects."""

    def save_evidence(self, *, name: str, memory: Path, disk: Path) -> None:
        """With the domain paused (capability evidence): its RAM as an ELF core at `memory` and
        a point-in-time copy of its root disk (qcow2, standalone) at `disk`, in a directory the
        hypervisor can write. Leaves the domain paused; on failure neither file is left."""


def check_domain_spec(spec: DomainSpec) -> None:
    """Reject specs no backend can run (InvalidInput), so every backend fails alike."""
    if not spec.disks:
        raise InvalidInput(f"domain {spec.name!r} needs at least a root disk")
    for disk in spec.disks:
        if disk.format not in DISK_FORMATS:
            raise InvalidInput(f"disk {disk.path}: unsupported format {disk.format!r} (use qcow2 or raw)")
    if not 1 <= spec.ssh_port <= 65535:
        raise InvalidInput(f"SSH port {spec.ssh_port} is not a TCP port")
    if spec.vcpus < 1 or spec.memory_mib < 1:
        raise InvalidInput(f"domain {spec.name!r} needs at least 1 vCPU and 1 MiB of memory")


def check_overlay_args(*, backing_format: str, size_gib: int) -> None:
    """Reject create_overlay arguments no backend accepts (InvalidInput)."""
    if backing_format not in DISK_FORMATS:
        raise InvalidInput(f"unsupported backing format {backing_format!r} (use qcow2 or raw)")
    if size_gib < 1:
        raise InvalidInput(f"disk size must be at least 1 GiB, not {size_gib}")
