"""An in-memory Backend for tests: same errors and ownership rules as libvirt, no VMs.

Test helpers beyond the Protocol: `fail_on` (method names that raise BackendError),
`foreign()` (a domain agentbox did not make, or another owner's), `set_state()`,
`defined_spec()`, `calls` (what was asked, in order) and `ignore_shutdown` (a guest that
ignores the ACPI power button).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from agentbox.backends.base import (
    DomainUsage,
    Capabilities,
    DomainInfo,
    DomainMetadata,
    DomainSpec,
    DiskSpec,
    DomainState,
    FilesystemSpec,
    SnapshotInfo,
    check_domain_spec,
    check_overlay_args,
)
from agentbox.errors import AlreadyExists, BackendError, ImageError, InvalidInput, NotFound
from agentbox.model.workspace import Accel

DEFAULT_CAPABILITIES = Capabilities(ram_snapshots=True, hotplug=True, accel=Accel.TCG, uri="fake:///",
                                    evidence=True, usage_stats=True)
_ACTIVE = frozenset({DomainState.RUNNING, DomainState.PAUSED})


@dataclass
class _Domain:
    state: DomainState
    metadata: DomainMetadata | None  # None: not made by agentbox at all
    spec: DomainSpec | None  # None for foreign domains
    snapshots: dict[str, SnapshotInfo] = field(default_factory=dict)
    snapshot_ports: dict[str, int] = field(default_factory=dict)  # the SSH port each snapshot's definition has
    filesystems: dict[str, FilesystemSpec] = field(default_factory=dict)  # live only, by tag
    disks: dict[str, DiskSpec] = field(default_factory=dict)  # live only, by serial
    usage: DomainUsage = field(default_factory=lambda: DomainUsage(cpu_seconds=0.0, disk_write_bytes=0))

    def power_cycle(self, state: DomainState) -> None:
        """A new QEMU (or none): hot-plugged devices are gone, as on libvirt; counters restart."""
        self.state = state
        self.usage = DomainUsage(cpu_seconds=0.0, disk_write_bytes=0)
        self.filesystems.clear()
        self.disks.clear()


class FakeBackend:
    def __init__(
        self,
        *,
        capabilities: Capabilities | None = None,
        owner: str = "fake",
        fail_on: Iterable[str] = (),
        ignore_shutdown: bool = False,
    ) -> None:
        self._capabilities = capabilities or DEFAULT_CAPABILITIES
        if self._capabilities.accel is Accel.AUTO:
            raise InvalidInput("backend capabilities name a resolved accelerator, never auto")
        self.owner = owner
        self.fail_on: set[str] = set(fail_on)
        self.ignore_shutdown = ignore_shutdown
        self.calls: list[tuple[str, str]] = []  # (method, domain name or disk path)
        self._domains: dict[str, _Domain] = {}
        self._lock = threading.RLock()  # services may call from TUI worker threads

    def capabilities_of(self, *, name: str) -> Capabilities:
        return self.capabilities  # one backend: the same for every domain

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    # --- test helpers ------------------------------------------------------------------

    def add_usage(self, name: str, *, cpu_seconds: float = 0.0, disk_write_bytes: int = 0) -> None:
        """The guest worked: its counters grow (as QEMU's would)."""
        with self._lock:
            old = self._domains[name].usage
            self._domains[name].usage = DomainUsage(cpu_seconds=old.cpu_seconds + cpu_seconds,
                                                    disk_write_bytes=old.disk_write_bytes + disk_write_bytes)

    def foreign(self, name: str, *, owner: str | None = None, state: DomainState = DomainState.RUNNING) -> None:
        """Add a domain that is not ours: without agentbox metadata, or with `owner`'s."""
        if owner == self.owner:
            raise InvalidInput(f"a foreign domain cannot carry this backend's owner {owner!r}")
        metadata = None if owner is None else DomainMetadata(name, owner, "foreign", "1970-01-01T00:00:00Z")
        with self._lock:
            if name in self._domains:
                raise AlreadyExists(f"a domain named {name!r} already exists")
            self._domains[name] = _Domain(state=state, metadata=metadata, spec=None)

    def set_state(self, name: str, state: DomainState) -> None:
        """Simulate a crash, a pause or a guest powering itself off."""
        with self._lock:
            self._ours(name, action="set the state of").state = state

    def defined_spec(self, name: str) -> DomainSpec:
        """The spec our domain `name` was defined with."""
        with self._lock:
            spec = self._ours(name, action="read the spec of").spec
        if spec is None:  # cannot happen: only define() makes domains with our owner
            raise NotFound(f"domain {name!r} has no spec")
        return spec

    # --- Backend -----------------------------------------------------------------------

    def define(self, *, spec: DomainSpec) -> None:
        self._enter("define", spec.name)
        check_domain_spec(spec)
        if spec.metadata.owner != self.owner:
            raise InvalidInput(
                f"domain {spec.name!r} carries owner {spec.metadata.owner!r}, "
                f"but this backend is {self.owner!r}: it could never see it again"
            )
        with self._lock:
            if spec.name in self._domains:
                raise AlreadyExists(f"a domain named {spec.name!r} already exists", hint="choose another name")
            self._domains[spec.name] = _Domain(state=DomainState.STOPPED, metadata=spec.metadata, spec=spec)

    def start(self, *, name: str) -> None:
        self._enter("start", name)
        with self._lock:
            domain = self._ours(name, action="start")
            if domain.state in _ACTIVE:
                raise BackendError(f"start domain {name!r}: domain is already running")
            domain.power_cycle(DomainState.RUNNING)

    def shutdown(self, *, name: str) -> None:
        self._enter("shutdown", name)
        with self._lock:
            domain = self._ours(name, action="shut down")
            if domain.state not in _ACTIVE:
                raise BackendError(f"shut down domain {name!r}: domain is not running")
            if not self.ignore_shutdown:
                domain.state = DomainState.STOPPED

    def destroy(self, *, name: str) -> None:
        self._enter("destroy", name)
        with self._lock:
            self._ours(name, action="destroy").power_cycle(DomainState.STOPPED)

    def undefine(self, *, name: str) -> None:
        self._enter("undefine", name)
        with self._lock:
            if self._ours(name, action="undefine").state in _ACTIVE:
                raise BackendError(f"domain {name!r} is still running", hint="destroy it first")
            del self._domains[name]

    def get(self, *, name: str) -> DomainInfo | None:
        self._enter("get", name)
        with self._lock:
            domain = self._domains.get(name)
            return None if domain is None else self._info(name, domain)

    def list_domains(self) -> tuple[DomainInfo, ...]:
        self._enter("list_domains", "")
        with self._lock:
            infos = [self._info(name, domain) for name, domain in sorted(self._domains.items())]
        return tuple(info for info in infos if info is not None)

    def create_snapshot(self, *, name: str, snapshot: str, description: str = "") -> SnapshotInfo:
        self._enter("create_snapshot", name)
        with self._lock:
            domain = self._ours(name, action="snapshot")
            if snapshot in domain.snapshots:
                raise AlreadyExists(f"domain {name!r} already has a snapshot {snapshot!r}")
            running = domain.state in _ACTIVE
            if running and not self._capabilities.ram_snapshots:
                raise BackendError(f"snapshot domain {name!r}: this backend cannot save a running guest's RAM")
            if running and any(fs.driver == "virtiofs" for fs in domain.filesystems.values()):
                raise BackendError(f"snapshot domain {name!r}: migration is disallowed by a non-migratable device")
            info = SnapshotInfo(name=snapshot, created=datetime.now(UTC).isoformat(timespec="seconds"),
                                with_memory=running, description=description)
            if domain.spec is not None:
                domain.snapshot_ports[snapshot] = domain.spec.ssh_port
            domain.snapshots[snapshot] = info
            return info

    def revert_snapshot(self, *, name: str, snapshot: str) -> None:
        self._enter("revert_snapshot", name)
        with self._lock:
            domain = self._ours(name, action="revert")
            if snapshot not in domain.snapshots:
                raise NotFound(f"domain {name!r} has no snapshot {snapshot!r}")
            domain.power_cycle(DomainState.RUNNING if domain.snapshots[snapshot].with_memory else DomainState.STOPPED)
            if domain.spec is not None and snapshot in domain.snapshot_ports:  # as libvirt: its saved definition
                domain.spec = replace(domain.spec, ssh_port=domain.snapshot_ports[snapshot])

    def list_snapshots(self, *, name: str) -> tuple[SnapshotInfo, ...]:
        self._enter("list_snapshots", name)
        with self._lock:
            return tuple(self._ours(name, action="list snapshots of").snapshots.values())

    def delete_snapshot(self, *, name: str, snapshot: str) -> None:
        self._enter("delete_snapshot", name)
        with self._lock:
            domain = self._ours(name, action="delete a snapshot of")
            if domain.snapshots.pop(snapshot, None) is None:
                raise NotFound(f"domain {name!r} has no snapshot {snapshot!r}")

    def attach_filesystem(self, *, name: str, fs: FilesystemSpec) -> None:
        self._enter("attach_filesystem", name)
        with self._lock:
            domain = self._running(name, action=f"attach share {fs.tag!r}")
            if fs.tag in domain.filesystems:
                raise AlreadyExists(f"a share {fs.tag!r} is already attached to {name!r}")
            domain.filesystems[fs.tag] = fs

    def detach_filesystem(self, *, name: str, tag: str) -> None:
        self._enter("detach_filesystem", name)
        with self._lock:
            if self._ours(name, action="detach a share from").filesystems.pop(tag, None) is None:
                raise NotFound(f"no share {tag!r} is attached to {name!r}")

    def attach_disk(self, *, name: str, disk: DiskSpec) -> None:
        self._enter("attach_disk", name)
        with self._lock:
            domain = self._running(name, action=f"attach disk {disk.serial!r}")
            domain.disks[disk.serial] = disk

    def detach_disk(self, *, name: str, serial: str) -> None:
        self._enter("detach_disk", name)
        with self._lock:
            if self._ours(name, action="detach a disk from").disks.pop(serial, None) is None:
                raise NotFound(f"no disk {serial!r} is attached to {name!r}")

    def attached(self, *, name: str) -> tuple[frozenset[str], frozenset[str]]:
        with self._lock:
            domain = self._ours(name, action="list the devices of")
            return frozenset(domain.filesystems), frozenset(domain.disks)

    def attached_filesystem(self, name: str, tag: str) -> FilesystemSpec:
        """Test helper: the spec a share was attached with."""
        with self._lock:
            return self._ours(name, action="read").filesystems[tag]

    def _running(self, name: str, *, action: str) -> _Domain:
        domain = self._ours(name, action=action)
        if domain.state not in _ACTIVE:
            raise BackendError(f"cannot {action}: domain {name!r} is not running")
        return domain

    def save_memory(self, *, name: str, path: Path) -> None:
        self._enter("save_memory", name)
        with self._lock:
            domain = self._ours(name, action="save")
            if domain.state is not DomainState.RUNNING:
                raise BackendError(f"save domain {name!r}: domain is not running")
            if domain.filesystems:
                raise BackendError(f"save domain {name!r}: non-migratable device: vhost-user-fs")
            spec = domain.spec
            assert spec is not None
            path.write_text(f"fake saved RAM: {spec.vcpus} vCPU, {spec.memory_mib} MiB, {len(spec.disks)} disks\n")
            domain.power_cycle(DomainState.STOPPED)

    def restore_memory(self, *, name: str, path: Path, paused: bool = False) -> None:
        self._enter("restore_memory", name)
        with self._lock:
            domain = self._ours(name, action="restore")
            if domain.state in _ACTIVE:
                raise BackendError(f"restore domain {name!r}: domain is running")
            spec = domain.spec
            assert spec is not None
            shape = f"fake saved RAM: {spec.vcpus} vCPU, {spec.memory_mib} MiB, {len(spec.disks)} disks\n"
            if not path.is_file() or path.read_text() != shape:
                raise BackendError(f"restore domain {name!r}: {path} is no save image of a domain of its shape")
            domain.power_cycle(DomainState.PAUSED if paused else DomainState.RUNNING)

    def move_ssh_port(self, *, name: str, old_port: int, new_port: int) -> None:
        self._enter("move_ssh_port", name)
        with self._lock:
            domain = self._ours(name, action="move the SSH port of")
            if not self._capabilities.standby:
                raise BackendError(f"move the SSH port of {name!r}: this backend cannot")
            if any(d.state in _ACTIVE and d.spec is not None and d.spec.ssh_port == new_port and d is not domain
                   for d in self._domains.values()):
                raise BackendError(f"hostfwd_add: could not set up host forwarding rule 'tcp:127.0.0.1:{new_port}'")
            assert domain.spec is not None and domain.spec.ssh_port == old_port, (domain.spec, old_port)
            domain.spec = replace(domain.spec, ssh_port=new_port)
            domain.snapshot_ports = dict.fromkeys(domain.snapshot_ports, new_port)

    def drop_ssh_port(self, *, name: str, port: int) -> None:
        self._enter("drop_ssh_port", name)
        with self._lock:
            domain = self._ours(name, action="drop the SSH port of")
            assert domain.spec is not None and domain.spec.ssh_port == port, (domain.spec, port)
            domain.spec = replace(domain.spec, ssh_port=0)  # listens nowhere until destroyed

    def ssh_port_of(self, *, name: str) -> int:
        """Tests: where the domain's guest SSH listens (0: nowhere)."""
        with self._lock:
            spec = self._ours(name, action="read").spec
            assert spec is not None
            return spec.ssh_port

    def export_disk(self, *, source: Path, target: Path, base: Path, base_format: str) -> None:
        self._enter("export_disk", str(target))
        if target.exists():
            raise AlreadyExists(f"disk {target} already exists")
        if not source.is_file() or not base.is_file():
            raise ImageError(f"export {source}: it or its base {base} does not exist")
        target.write_text(f"fake qcow2 export of {source} over {base} ({base_format})\n")
        os.chmod(target, 0o600)

    def create_overlay(self, *, path: Path, backing: Path, backing_format: str, size_gib: int) -> None:
        self._enter("create_overlay", str(path))
        check_overlay_args(backing_format=backing_format, size_gib=size_gib)
        if not backing.is_file():
            raise ImageError(f"backing image {backing} does not exist", hint="fetch or build the image again")
        if path.exists():
            raise AlreadyExists(f"disk {path} already exists")
        # A real (tiny) file, so services' cleanup of partial work can be checked on disk.
        path.write_text(f"fake qcow2 overlay: {size_gib} GiB over {backing} ({backing_format})\n")
        os.chmod(path, 0o600)

    def delete_volume(self, *, path: Path) -> None:
        self._enter("delete_volume", str(path))
        path.unlink(missing_ok=True)

    def pause(self, *, name: str) -> None:
        self._enter("pause", name)
        with self._lock:
            domain = self._ours(name, action="pause")
            if domain.state not in _ACTIVE:
                raise BackendError(f"cannot pause {name!r}: it is not running")
            domain.state = DomainState.PAUSED

    def usage(self, *, name: str) -> DomainUsage | None:
        with self._lock:
            domain = self._ours(name, action="read the usage of")
            return domain.usage if domain.state in _ACTIVE else None

    def resume(self, *, name: str) -> None:
        self._enter("resume", name)
        with self._lock:
            domain = self._ours(name, action="resume")
            if domain.state is DomainState.PAUSED:
                domain.state = DomainState.RUNNING

    def save_evidence(self, *, name: str, memory: Path, disk: Path) -> None:
        """Stand-in files: what the guest 'held' is its name and the state it was in."""
        self._enter("save_evidence", name)
        with self._lock:
            domain = self._ours(name, action="save the evidence of")
            if domain.state is not DomainState.PAUSED:
                raise BackendError(f"cannot save the evidence of {name!r}: it is not paused")
            memory.write_bytes(f"ELF core of {name}\n".encode())
            disk.write_bytes(f"disk of {name}\n".encode())

    # --- internals ---------------------------------------------------------------------

    def _enter(self, method: str, target: str) -> None:
        self.calls.append((method, target))
        if method in self.fail_on:
            raise BackendError(f"injected failure in {method} ({target})")

    def _info(self, name: str, domain: _Domain) -> DomainInfo | None:
        if domain.metadata is None or domain.metadata.owner != self.owner:
            return None
        return DomainInfo(name=name, state=domain.state, metadata=domain.metadata)

    def _ours(self, name: str, *, action: str) -> _Domain:
        domain = self._domains.get(name)
        if domain is None or self._info(name, domain) is None:
            raise NotFound(f"cannot {action} {name!r}: no such agentbox domain")
        return domain
