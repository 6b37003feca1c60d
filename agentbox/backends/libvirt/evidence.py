"""Freezing a guest and keeping what it held: its RAM and a point-in-time copy of its disk.

The RAM goes out as an ELF core of guest memory (`virDomainCoreDumpWithFormat`, memory
only), which needs no migration support from the devices: a guest with virtiofs shares
attached cannot take a RAM snapshot, but it can be dumped. The disk is copied by a push
backup job (`virDomainBackupBegin`): QEMU writes what the guest's disk held at the moment
the job began into a new qcow2, without the guest's help and whatever it does meanwhile.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt

from agentbox.backends.libvirt.errors import translate
from agentbox.errors import BackendError

BACKUP_TIMEOUT_S = 1800.0
_POLL_S = 0.2


def pause(domain: libvirt.virDomain) -> None:
    try:
        if domain.state()[0] != libvirt.VIR_DOMAIN_PAUSED:
            domain.suspend()
    except libvirt.libvirtError as err:
        raise translate(err, action=f"pause domain {domain.name()!r}") from None


def resume(domain: libvirt.virDomain) -> None:
    try:
        if domain.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
            domain.resume()
    except libvirt.libvirtError as err:
        raise translate(err, action=f"resume domain {domain.name()!r}") from None


def build_backup_xml(*, domain_xml: str, disk: Path) -> str:
    """<domainbackup> copying the first writable disk to `disk`, every other disk left out."""
    root = ET.Element("domainbackup", {"mode": "push"})
    disks = ET.SubElement(root, "disks")
    chosen = False
    for element in ET.fromstring(domain_xml).iterfind("./devices/disk"):
        target = element.find("target")
        if target is None or not target.get("dev"):
            continue
        if chosen or element.find("readonly") is not None or element.get("device") != "disk":
            ET.SubElement(disks, "disk", {"name": target.get("dev", ""), "backup": "no"})
            continue
        chosen = True
        entry = ET.SubElement(disks, "disk", {"name": target.get("dev", ""), "backup": "yes", "type": "file"})
        ET.SubElement(entry, "driver", {"type": "qcow2"})
        ET.SubElement(entry, "target", {"file": str(disk)})
    if not chosen:
        raise BackendError("the domain has no writable disk to copy")
    return ET.tostring(root, encoding="unicode")


def save(domain: libvirt.virDomain, *, memory: Path, disk: Path) -> None:
    name = domain.name()
    try:
        # The disk first: the backup's point in time is when it begins, with the vCPUs frozen.
        domain.backupBegin(build_backup_xml(domain_xml=domain.XMLDesc(0), disk=disk), None, 0)
        _wait_for_backup(domain)
        domain.coreDumpWithFormat(str(memory), libvirt.VIR_DOMAIN_CORE_DUMP_FORMAT_RAW, libvirt.VIR_DUMP_MEMORY_ONLY)
    except libvirt.libvirtError as err:
        _abort_job(domain)
        for path in (memory, disk):
            path.unlink(missing_ok=True)
        raise translate(err, action=f"save the evidence of domain {name!r}") from None
    except BaseException:
        _abort_job(domain)
        for path in (memory, disk):
            path.unlink(missing_ok=True)
        raise


def _wait_for_backup(domain: libvirt.virDomain) -> None:
    deadline = time.monotonic() + BACKUP_TIMEOUT_S
    while domain.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
        if time.monotonic() > deadline:
            raise BackendError(f"copying the disk of {domain.name()!r} took more than {BACKUP_TIMEOUT_S:.0f} s")
        time.sleep(_POLL_S)
    stats = domain.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    if stats.get("type") != libvirt.VIR_DOMAIN_JOB_COMPLETED:
        raise BackendError(f"copying the disk of {domain.name()!r} failed: "
                           f"{stats.get('errmsg') or 'libvirt gives no reason'}")


def _abort_job(domain: libvirt.virDomain) -> None:
    try:
        if domain.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
            domain.abortJob()
    except libvirt.libvirtError:
        pass  # no job left to stop
