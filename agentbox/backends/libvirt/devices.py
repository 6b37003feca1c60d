"""Hot-plug and unplug of shares and copy disks on a running domain (live only: a device
never becomes part of the persistent definition, so no snapshot and no later boot has it)."""

from __future__ import annotations

import libvirt

from agentbox.backends.base import DiskSpec, FilesystemSpec
from agentbox.backends.libvirt import device_xml
from agentbox.backends.libvirt.errors import translate
from agentbox.errors import BackendError, NotFound

_LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE


def attach_filesystem(domain: libvirt.virDomain, *, fs: FilesystemSpec) -> None:
    _require_running(domain, action=f"attach share {fs.tag!r}")
    try:
        domain.attachDeviceFlags(device_xml.filesystem_xml(fs), _LIVE)
    except libvirt.libvirtError as err:
        raise translate(err, action=f"attach share {fs.tag!r} to {domain.name()!r}") from None


def detach_filesystem(domain: libvirt.virDomain, *, tag: str) -> None:
    found = device_xml.find_filesystem(_live_xml(domain), tag=tag)
    if found is None:
        raise NotFound(f"no share {tag!r} is attached to {domain.name()!r}")
    _detach(domain, found, what=f"share {tag!r}")


def attach_disk(domain: libvirt.virDomain, *, disk: DiskSpec) -> None:
    _require_running(domain, action=f"attach disk {disk.serial!r}")
    xml = device_xml.hotplug_disk_xml(disk, used_targets=device_xml.disk_targets(_live_xml(domain)))
    try:
        domain.attachDeviceFlags(xml, _LIVE)
    except libvirt.libvirtError as err:
        raise translate(err, action=f"attach disk {disk.serial!r} to {domain.name()!r}") from None


def detach_disk(domain: libvirt.virDomain, *, serial: str) -> None:
    found = device_xml.find_disk(_live_xml(domain), serial=serial)
    if found is None:
        raise NotFound(f"no disk {serial!r} is attached to {domain.name()!r}")
    _detach(domain, found, what=f"disk {serial!r}")


def attached(domain: libvirt.virDomain) -> tuple[frozenset[str], frozenset[str]]:
    if not domain.isActive():
        return frozenset(), frozenset()
    xml = _live_xml(domain)
    return frozenset(device_xml.filesystem_tags(xml)), frozenset(device_xml.disk_serials(xml))


def _detach(domain: libvirt.virDomain, xml: str, *, what: str) -> None:
    try:
        domain.detachDeviceFlags(xml, _LIVE)
    except libvirt.libvirtError as err:
        raise translate(err, action=f"detach {what} from {domain.name()!r}") from None


def _live_xml(domain: libvirt.virDomain) -> str:
    try:
        return domain.XMLDesc(0)
    except libvirt.libvirtError as err:
        raise translate(err, action=f"read domain {domain.name()!r}") from None


def _require_running(domain: libvirt.virDomain, *, action: str) -> None:
    if not domain.isActive():
        raise BackendError(f"cannot {action}: domain {domain.name()!r} is not running")
