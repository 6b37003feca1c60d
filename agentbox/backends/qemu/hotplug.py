"""Hot-plug and unplug of shares (vhost-user-fs-pci, served by a virtiofsd the backend
starts) and disks (virtio-blk-pci) on a running QEMU, over QMP. Live only: nothing of it
is in the definition, so a restart (start, revert) comes up without them, as on libvirt."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agentbox.backends.base import DiskSpec, FilesystemSpec
from agentbox.backends.qemu import processes
from agentbox.backends.qemu.command_line import device_id, key_of
from agentbox.backends.qemu.monitor import Monitor
from agentbox.errors import AlreadyExists, BackendError, NotFound

UNPLUG_TIMEOUT_S = 15.0  # the guest acknowledges an ACPI unplug; a busy TCG guest is slow
_PERIPHERALS = "/machine/peripheral"


@dataclass(frozen=True)
class ShareFiles:
    """A share's virtiofsd: its socket, identity and log, in the domain's directory (named
    by a short hash: a Unix socket path must stay under 108 bytes)."""

    socket: Path
    identity: Path
    log: Path

    @classmethod
    def of(cls, domain_dir: Path, tag: str) -> ShareFiles:
        key = hashlib.sha256(tag.encode()).hexdigest()[:12]
        return cls(socket=domain_dir / f"fs-{key}.sock", identity=domain_dir / f"fs-{key}.json",
                   log=domain_dir / f"fs-{key}.log")

    def remove(self) -> None:
        for path in (self.socket, self.identity):
            path.unlink(missing_ok=True)


def attach_filesystem(monitor: Monitor, *, domain_dir: Path, fs: FilesystemSpec, virtiofsd: str,
                      virtiofsd_readonly: bool) -> None:
    if fs.driver != "virtiofs":
        raise BackendError(f"share {fs.tag!r}: the QEMU backend shares folders by virtiofs only, not {fs.driver!r}",
                           hint="use a copy-disk share (`share add --mechanism copy-disk`)")
    if fs.readonly and not virtiofsd_readonly:
        # Fail closed: this virtiofsd cannot enforce read-only itself.
        raise BackendError(f"share {fs.tag!r}: {virtiofsd} has no --readonly option",
                           hint="share through a read-only bind mount (virtiofs-ro-bind) or a copy disk")
    dev = device_id("fs", fs.tag)
    if fs.tag in _peripheral_keys(monitor, "fs"):
        raise AlreadyExists(f"a share {fs.tag!r} is already attached")
    files = ShareFiles.of(domain_dir, fs.tag)
    identity = processes.start_virtiofsd(virtiofsd=virtiofsd, source=fs.source, socket=files.socket,
                                         readonly=fs.readonly, log_file=files.log)
    processes.write_identity(files.identity, identity, tag=fs.tag)
    chardev = f"chr-{dev}"
    try:
        monitor.execute("chardev-add", {"id": chardev, "backend": {"type": "socket", "data": {
            "addr": {"type": "unix", "data": {"path": str(files.socket)}}, "server": False}}},
            action=f"attach share {fs.tag!r}")
        try:
            monitor.execute("device_add", {"driver": "vhost-user-fs-pci", "id": dev, "chardev": chardev,
                                           "tag": fs.tag}, action=f"attach share {fs.tag!r}")
        except BaseException:
            monitor.execute("chardev-remove", {"id": chardev})
            raise
    except BaseException:
        processes.stop(identity)
        files.remove()
        raise


def detach_filesystem(monitor: Monitor, *, domain_dir: Path, tag: str) -> None:
    if tag not in _peripheral_keys(monitor, "fs"):
        raise NotFound(f"no share {tag!r} is attached")
    dev = device_id("fs", tag)
    _unplug(monitor, dev, what=f"share {tag!r}")
    monitor.execute("chardev-remove", {"id": f"chr-{dev}"}, action=f"detach share {tag!r}")
    stop_virtiofsd(identity_file=ShareFiles.of(domain_dir, tag).identity)


def stop_virtiofsd(*, identity_file: Path) -> None:
    """Stop a share's virtiofsd (if it still runs) and remove its socket and identity."""
    identity = processes.live(identity_file)
    if identity is not None:
        processes.stop(identity)
    identity_file.with_suffix(".sock").unlink(missing_ok=True)
    identity_file.unlink(missing_ok=True)


def attach_disk(monitor: Monitor, *, disk: DiskSpec) -> None:
    dev = device_id("disk", disk.serial)
    if disk.serial in _peripheral_keys(monitor, "disk"):
        raise AlreadyExists(f"a disk {disk.serial!r} is already attached")
    node = f"node-{dev}"
    action = f"attach disk {disk.serial!r}"
    monitor.execute("blockdev-add", {"driver": disk.format, "node-name": node, "read-only": disk.readonly,
                                     "file": {"driver": "file", "filename": str(disk.path),
                                              "read-only": disk.readonly}}, action=action)
    try:
        monitor.execute("device_add", {"driver": "virtio-blk-pci", "id": dev, "drive": node,
                                       "serial": disk.serial}, action=action)
    except BaseException:
        monitor.execute("blockdev-del", {"node-name": node})
        raise


def detach_disk(monitor: Monitor, *, serial: str) -> None:
    if serial not in _peripheral_keys(monitor, "disk"):
        raise NotFound(f"no disk {serial!r} is attached")
    dev = device_id("disk", serial)
    _unplug(monitor, dev, what=f"disk {serial!r}")
    monitor.execute("blockdev-del", {"node-name": f"node-{dev}"}, action=f"detach disk {serial!r}")


def attached(monitor: Monitor) -> tuple[frozenset[str], frozenset[str]]:
    return frozenset(_peripheral_keys(monitor, "fs")), frozenset(_peripheral_keys(monitor, "disk"))


def _unplug(monitor: Monitor, dev: str, *, what: str) -> None:
    monitor.execute("device_del", {"id": dev}, action=f"detach {what}")

    def is_it(data: Mapping[str, object]) -> bool:
        return data.get("device") == dev

    if not monitor.wait_event("DEVICE_DELETED", match=is_it, timeout_s=UNPLUG_TIMEOUT_S):
        raise BackendError(f"detach {what}: the guest did not release it within {UNPLUG_TIMEOUT_S:.0f} s",
                           hint="it is released when the VM stops; `agentbox stop` then `start`")


def _peripheral_keys(monitor: Monitor, prefix: str) -> set[str]:
    listed = monitor.execute("qom-list", {"path": _PERIPHERALS})
    keys = set()
    for entry in listed if isinstance(listed, list) else ():
        name = entry.get("name", "") if isinstance(entry, dict) else ""
        key = key_of(prefix, name) if isinstance(name, str) else None
        if key is not None:
            keys.add(key)
    return keys
