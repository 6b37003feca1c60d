"""The libvirt implementation of the Backend Protocol (qemu:// URIs, and test:// for tests).

Only domains whose agentbox metadata names this installation's owner exist for this class:
any other domain on the host is invisible and untouchable (its name still cannot be reused).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit
from xml.etree import ElementTree

import libvirt

from agentbox.backends import qemu_img
from agentbox.backends.accel import resolve_accel
from agentbox.backends.base import (
    DomainUsage,
    Capabilities,
    DomainInfo,
    DomainSpec,
    DiskSpec,
    DomainState,
    FilesystemSpec,
    SnapshotInfo,
)
from agentbox.backends.libvirt import devices, evidence, save_image, snapshots, ssh_port
from agentbox.backends.libvirt.remote_storage import RemoteStorage
from agentbox.backends.libvirt.domain_xml import build_domain_xml, parse_metadata
from agentbox.backends.libvirt.errors import translate
from agentbox.errors import (
    AgentboxError,
    AlreadyExists,
    BackendError,
    InvalidInput,
    NotFound,
)
from agentbox.model.workspace import Accel

_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.RUNNING,  # running, waiting on a resource
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.RUNNING,  # still up while shutting down
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.STOPPED,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
}
_UNDEFINE_FLAG_SETS = (
    libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA,
    # The test driver rejects the NVRAM and checkpoint flags as "unsupported flags".
    libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE,
)
_UNSUPPORTED = frozenset(
    {libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_OPERATION_UNSUPPORTED}
)
_DRIVERS = ("qemu", "test")
_GIB = 1024**3


def _ignore_libvirt_error(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; we raise them instead."""


class LibvirtBackend:
    def __init__(self, *, uri: str, owner: str, accel: Accel, env: Mapping[str, str] | None = None,
                 remote_pool: str = "agentbox") -> None:
        parts = urlsplit(uri)
        driver = parts.scheme.partition("+")[0]
        if driver not in _DRIVERS:
            raise InvalidInput(
                f"unsupported libvirt URI {uri!r}: agentbox drives QEMU (qemu:///system, "
                "qemu:///session, qemu+ssh://HOST/system) or the test driver (test:///...)"
            )
        if not owner:
            raise InvalidInput("the backend needs a non-empty owner tag")
        self._uri = uri
        self._owner = owner
        self._driver = driver
        self._local = not parts.netloc
        self._accel_setting = accel
        self._env = dict(env or {})
        self._resolved_accel: Accel | None = None
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()
        # A remote host: every disk is a volume of its pool (remote_storage.py).
        self._remote = None if self._local else RemoteStorage(connection=self._connection, pool=remote_pool, uri=uri)

    @property
    def _accel(self) -> Accel:
        # Resolved on first use, so a bad AGENTBOX_ACCEL or unusable KVM is reported by the
        # command that needs a VM (and by doctor), not by every command.
        if self._resolved_accel is None:
            self._resolved_accel = resolve_accel(setting=self._accel_setting, env=self._env)
        return self._resolved_accel

    def capabilities_of(self, *, name: str) -> Capabilities:
        return self.capabilities  # one backend: the same for every domain

    @property
    def capabilities(self) -> Capabilities:
        # The test driver keeps snapshots (with "RAM") but cannot hot-plug devices.
        # A remote host: a folder on the user's machine cannot be served by a virtiofsd
        # there (shares become uploaded copy disks), and evidence would be written there.
        return Capabilities(
            ram_snapshots=True, hotplug=self._driver == "qemu", accel=self._accel, uri=self._uri,
            libvirt_version=self._lib_version(), evidence=self._driver == "qemu" and self._local,
            memory_restore=self._driver == "qemu" and self._local, virtiofs=self._local,
            usage_stats=self._driver == "qemu", standby=self._driver == "qemu" and self._local,
        )

    def _lib_version(self) -> int:
        try:
            return int(self._connection().getLibVersion())
        except (libvirt.libvirtError, AgentboxError):
            return 0  # unknown: callers then assume the oldest behaviour

    @property
    def domain_type(self) -> str:
        """<domain type=...>: the test driver's capabilities only offer 'test'."""
        if self._driver == "test":
            return "test"
        return {Accel.KVM: "kvm", Accel.HVF: "hvf"}.get(self._accel, "qemu")

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except libvirt.libvirtError:
                pass  # closing a dead connection: nothing left to release

    # --- domains -----------------------------------------------------------------------

    def define(self, *, spec: DomainSpec) -> None:
        if spec.metadata.owner != self._owner:
            raise InvalidInput(
                f"domain {spec.name!r} carries owner {spec.metadata.owner!r}, "
                f"but this backend is {self._owner!r}: it could never see it again"
            )
        if self._lookup(spec.name) is not None:
            raise AlreadyExists(f"a domain named {spec.name!r} already exists", hint="choose another name")
        local_spec = spec
        if self._remote is not None:
            spec = self._remote_spec(spec)
        xml = build_domain_xml(spec=spec, accel=self._accel, domain_type=self.domain_type)
        if self._driver == "qemu" and self._local:
            _ensure_console_log(spec.console_log)
        try:
            self._connection().defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        except libvirt.libvirtError as err:
            if self._lookup(spec.name) is not None:  # lost a race for the name
                raise AlreadyExists(f"a domain named {spec.name!r} already exists") from None
            if self._remote is not None:  # the seed uploaded for it; the overlay is the caller's
                for disk in local_spec.disks[1:]:
                    self._remote.delete(disk.path)
            raise translate(err, action=f"define domain {spec.name!r}") from None

    def start(self, *, name: str) -> None:
        domain = self._require(name, action="start")
        try:
            domain.create()
        except libvirt.libvirtError as err:
            raise translate(err, action=f"start domain {name!r}") from None

    def shutdown(self, *, name: str) -> None:
        domain = self._require(name, action="shut down")
        action = f"shut down domain {name!r}"
        try:
            domain.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        except libvirt.libvirtError as err:
            if err.get_error_code() not in _UNSUPPORTED:
                raise translate(err, action=action) from None
            # The test driver knows no shutdown modes; its default is just as asynchronous.
            try:
                domain.shutdown()
            except libvirt.libvirtError as err2:
                raise translate(err2, action=action) from None

    def destroy(self, *, name: str) -> None:
        domain = self._require(name, action="destroy")
        try:
            domain.destroy()
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID and not self._is_active(domain):
                return  # already off: that is the requested end state
            raise translate(err, action=f"destroy domain {name!r}") from None

    def undefine(self, *, name: str) -> None:
        domain = self._require(name, action="undefine")
        # Undefining a running domain would leave it running as a transient domain.
        if self._is_active(domain):
            raise BackendError(f"domain {name!r} is still running", hint="destroy it first")
        action = f"undefine domain {name!r}"
        for flags in _UNDEFINE_FLAG_SETS:
            try:
                domain.undefineFlags(flags)
                if self._remote is not None:
                    self._remote.delete_domain(domain=name)  # nothing of it stays on the host
                return
            except libvirt.libvirtError as err:
                if err.get_error_code() not in _UNSUPPORTED or flags == _UNDEFINE_FLAG_SETS[-1]:
                    raise translate(err, action=action) from None

    def get(self, *, name: str) -> DomainInfo | None:
        domain = self._lookup(name)
        return None if domain is None else self._info(domain)

    def list_domains(self) -> tuple[DomainInfo, ...]:
        try:
            domains = self._connection().listAllDomains(0)
        except libvirt.libvirtError as err:
            raise translate(err, action="list domains") from None
        infos = (self._info(domain) for domain in domains)
        return tuple(sorted((info for info in infos if info is not None), key=lambda info: info.name))

    # --- snapshots ---------------------------------------------------------------------

    def create_snapshot(self, *, name: str, snapshot: str, description: str = "") -> SnapshotInfo:
        return snapshots.create(self._require(name, action="snapshot"), snapshot=snapshot,
                                description=description)

    def revert_snapshot(self, *, name: str, snapshot: str) -> None:
        snapshots.revert(self._require(name, action="revert"), snapshot=snapshot)

    def list_snapshots(self, *, name: str) -> tuple[SnapshotInfo, ...]:
        return snapshots.list_all(self._require(name, action="list snapshots of"))

    def delete_snapshot(self, *, name: str, snapshot: str) -> None:
        snapshots.delete(self._require(name, action="delete a snapshot of"), snapshot=snapshot)

    # --- saved RAM (warm clones) ------------------------------------------------------------

    def save_memory(self, *, name: str, path: Path) -> None:
        domain = self._require(name, action="save")
        try:
            domain.saveFlags(str(path), None, libvirt.VIR_DOMAIN_SAVE_RUNNING)
        except libvirt.libvirtError as err:
            path.unlink(missing_ok=True)
            raise translate(err, action=f"save the RAM of domain {name!r}") from None

    def restore_memory(self, *, name: str, path: Path, paused: bool = False) -> None:
        domain = self._require(name, action="restore")
        if self._is_active(domain):
            raise BackendError(f"domain {name!r} is running", hint="destroy it first")
        try:
            # The defined domain's own XML goes into the image's header (see save_image.py),
            # so libvirt restores it as a save image of this very domain.
            xml = domain.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE)
            save_image.write_domain_xml(path, xml=xml)
            self._connection().restoreFlags(
                str(path), None, libvirt.VIR_DOMAIN_SAVE_PAUSED if paused else libvirt.VIR_DOMAIN_SAVE_RUNNING)
        except libvirt.libvirtError as err:
            raise translate(err, action=f"restore saved RAM {path} into domain {name!r}") from None
        except OSError as exc:
            raise BackendError(f"cannot update the save image {path}: {exc.strerror}") from None

    def move_ssh_port(self, *, name: str, old_port: int, new_port: int) -> None:
        ssh_port.move(self._require(name, action="move the SSH port of"), old_port=old_port, new_port=new_port)

    def drop_ssh_port(self, *, name: str, port: int) -> None:
        ssh_port.drop(self._require(name, action="drop the SSH port of"), port=port)

    # --- hot-plugged devices ---------------------------------------------------------------

    def attach_filesystem(self, *, name: str, fs: FilesystemSpec) -> None:
        devices.attach_filesystem(self._require(name, action="attach a share to"), fs=fs)

    def detach_filesystem(self, *, name: str, tag: str) -> None:
        devices.detach_filesystem(self._require(name, action="detach a share from"), tag=tag)

    def attach_disk(self, *, name: str, disk: DiskSpec) -> None:
        if self._remote is not None:
            disk = replace(disk, path=Path(self._remote.upload(local=disk.path)))
        devices.attach_disk(self._require(name, action="attach a disk to"), disk=disk)

    def detach_disk(self, *, name: str, serial: str) -> None:
        devices.detach_disk(self._require(name, action="detach a disk from"), serial=serial)

    def attached(self, *, name: str) -> tuple[frozenset[str], frozenset[str]]:
        return devices.attached(self._require(name, action="list the devices of"))

    # --- disks -------------------------------------------------------------------------

    def create_overlay(self, *, path: Path, backing: Path, backing_format: str, size_gib: int) -> None:
        if self._remote is not None:
            self._remote.create_overlay(local=path, backing=backing, backing_format=backing_format,
                                        size_gib=size_gib)
            return
        # libvirt chowns the overlay for QEMU when the domain starts.
        qemu_img.create_overlay(path=path, backing=backing, backing_format=backing_format, size_gib=size_gib)

    def export_disk(self, *, source: Path, target: Path, base: Path, base_format: str) -> None:
        if self._remote is not None:
            raise BackendError("a disk on a remote libvirt host cannot be exported here")
        qemu_img.export_disk(source=source, target=target, base=base, base_format=base_format)

    def delete_volume(self, *, path: Path) -> None:
        if self._remote is not None:
            self._remote.delete(path)
        qemu_img.delete_volume(path=path)

    # --- evidence ------------------------------------------------------------------------

    def pause(self, *, name: str) -> None:
        evidence.pause(self._require(name, action="pause"))

    def resume(self, *, name: str) -> None:
        evidence.resume(self._require(name, action="resume"))

    def usage(self, *, name: str) -> DomainUsage | None:
        domain = self._require(name, action="read the usage of")
        try:
            if not domain.isActive():
                return None
            # info()[4]: CPU time in ns; the block stats' wr_bytes per disk, from QEMU
            cpu_ns = domain.info()[4]
            written = sum(_block_writes(domain, target) for target in _disk_targets(domain.XMLDesc(0)))
        except libvirt.libvirtError as err:
            if err.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
                return None  # it stopped meanwhile
            raise translate(err, action=f"read the usage of domain {name!r}") from None
        return DomainUsage(cpu_seconds=cpu_ns / 1e9, disk_write_bytes=written)

    def save_evidence(self, *, name: str, memory: Path, disk: Path) -> None:
        evidence.save(self._require(name, action="save the evidence of"), memory=memory, disk=disk)

    # --- helpers -----------------------------------------------------------------------

    def _remote_spec(self, spec: DomainSpec) -> DomainSpec:
        """`spec` with the remote host's paths: an overlay made there, every other disk (the
        seed) uploaded, the kernel and initrd cached there, the console log in its pool."""
        assert self._remote is not None
        root, *others = spec.disks
        root_path = self._remote.path_of(root.path)
        if root_path is None:
            raise BackendError(f"the root disk of {spec.name!r} is not on {self._uri}",
                               hint="create_overlay makes it there first")
        disks = (replace(root, path=Path(root_path)),
                 *(replace(disk, path=Path(self._remote.upload(local=disk.path))) for disk in others))
        boot = spec.kernel_boot
        if boot is not None:
            boot = replace(boot, kernel=Path(self._remote.ensure_image_file(boot.kernel)),
                           initrd=Path(self._remote.ensure_image_file(boot.initrd)))
        return replace(spec, disks=disks, kernel_boot=boot,
                       console_log=Path(self._remote.console_log(domain=spec.name)))

    def _connection(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is not None and _alive(self._conn):
                return self._conn
            libvirt.registerErrorHandler(_ignore_libvirt_error, None)
            try:
                self._conn = libvirt.open(self._uri)
            except libvirt.libvirtError as err:
                raise translate(err, action=f"connect to libvirt at {self._uri}", connecting=True) from None
            return self._conn

    def _lookup(self, name: str) -> libvirt.virDomain | None:
        try:
            return self._connection().lookupByName(name)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise translate(err, action=f"look up domain {name!r}") from None

    def _info(self, domain: libvirt.virDomain) -> DomainInfo | None:
        """The domain as agentbox sees it; None if it is not ours (or vanished meanwhile)."""
        try:
            metadata = parse_metadata(domain.XMLDesc(0))
            if metadata is None or metadata.owner != self._owner:
                return None
            state, _reason = domain.state()
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise translate(err, action=f"read domain {domain.name()!r}") from None
        return DomainInfo(name=domain.name(), state=_STATES.get(state, DomainState.OTHER), metadata=metadata)

    def _require(self, name: str, *, action: str) -> libvirt.virDomain:
        """Our domain called `name`; NotFound for missing and foreign domains alike."""
        domain = self._lookup(name)
        if domain is None or self._info(domain) is None:
            raise NotFound(f"cannot {action} {name!r}: no such agentbox domain")
        return domain

    @staticmethod
    def _is_active(domain: libvirt.virDomain) -> bool:
        try:
            return bool(domain.isActive())
        except libvirt.libvirtError as err:
            raise translate(err, action=f"read state of domain {domain.name()!r}") from None


def _disk_targets(xml: str) -> list[str]:
    root = ElementTree.fromstring(xml)
    return [target.get("dev", "") for target in root.findall("./devices/disk[@device='disk']/target")
            if target.get("dev")]


def _block_writes(domain: libvirt.virDomain, target: str) -> int:
    # blockStats: (rd_req, rd_bytes, wr_req, wr_bytes, errs)
    return int(domain.blockStats(target)[3])


def _alive(conn: libvirt.virConnect) -> bool:
    """isAlive() alone stays true after libvirtd restarts (the client notices the closed
    socket only at its next call, which then fails with a broken pipe): one cheap round
    trip tells, so a long-lived process (the TUI, a supervisor) reconnects by itself."""
    try:
        return bool(conn.isAlive()) and conn.getLibVersion() > 0
    except libvirt.libvirtError:
        return False  # the next call opens a fresh connection


def _ensure_console_log(path: Path) -> None:
    """Create the console log owned by the caller: virtlogd (root) then appends to it and
    keeps its owner, so the user can read it after a failed boot."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    except OSError as exc:
        raise BackendError(f"cannot create console log {path}: {exc.strerror}") from None
