"""Internal qcow2 snapshots of a domain through libvirt (disk, plus RAM when it runs).

Read-only disks (the cloud-init seed) are excluded: they are raw, never change, and an
internal snapshot needs every included disk to be qcow2.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import libvirt

from agentbox.backends.base import SnapshotInfo
from agentbox.backends.libvirt.errors import translate
from agentbox.errors import AlreadyExists, NotFound


def build_snapshot_xml(*, domain_xml: str, snapshot: str, description: str, running: bool) -> str:
    """<domainsnapshot> for an internal snapshot of the domain described by `domain_xml`."""
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = snapshot
    if description:
        ET.SubElement(root, "description").text = description
    # A running guest's RAM goes into the qcow2 too, so a revert resumes it mid-flight.
    ET.SubElement(root, "memory", {"snapshot": "internal" if running else "no"})
    disks = ET.SubElement(root, "disks")
    for disk in ET.fromstring(domain_xml).iterfind("./devices/disk"):
        target = disk.find("target")
        if target is None or target.get("dev") is None:
            continue
        mode = "no" if disk.find("readonly") is not None else "internal"
        ET.SubElement(disks, "disk", {"name": target.get("dev", ""), "snapshot": mode})
    return ET.tostring(root, encoding="unicode")


def create(domain: libvirt.virDomain, *, snapshot: str, description: str) -> SnapshotInfo:
    if _find(domain, snapshot) is not None:
        raise AlreadyExists(f"domain {domain.name()!r} already has a snapshot {snapshot!r}")
    try:
        running = bool(domain.isActive())
        xml = build_snapshot_xml(domain_xml=domain.XMLDesc(0), snapshot=snapshot, description=description,
                                 running=running)
        # ATOMIC: a failed snapshot leaves no half-written one behind.
        made = domain.snapshotCreateXML(xml, libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
        return _info(made)
    except libvirt.libvirtError as err:
        raise translate(err, action=f"snapshot domain {domain.name()!r} as {snapshot!r}") from None


def revert(domain: libvirt.virDomain, *, snapshot: str) -> None:
    found = _require(domain, snapshot)
    try:
        # A RAM snapshot comes back running even if it was taken paused (a standby copy's is).
        with_memory = _info(found).with_memory
        domain.revertToSnapshot(found, libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING if with_memory else 0)
    except libvirt.libvirtError as err:
        raise translate(err, action=f"revert domain {domain.name()!r} to {snapshot!r}") from None


def list_all(domain: libvirt.virDomain) -> tuple[SnapshotInfo, ...]:
    try:
        infos = [_info(snap) for snap in domain.listAllSnapshots(0)]
    except libvirt.libvirtError as err:
        raise translate(err, action=f"list snapshots of domain {domain.name()!r}") from None
    return tuple(sorted(infos, key=lambda info: (info.created, info.name)))


def delete(domain: libvirt.virDomain, *, snapshot: str) -> None:
    found = _require(domain, snapshot)
    try:
        found.delete(0)
    except libvirt.libvirtError as err:
        raise translate(err, action=f"delete snapshot {snapshot!r} of domain {domain.name()!r}") from None


def _find(domain: libvirt.virDomain, snapshot: str) -> libvirt.virDomainSnapshot | None:
    try:
        return domain.snapshotLookupByName(snapshot, 0)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            return None
        raise translate(err, action=f"look up snapshot {snapshot!r} of domain {domain.name()!r}") from None


def _require(domain: libvirt.virDomain, snapshot: str) -> libvirt.virDomainSnapshot:
    found = _find(domain, snapshot)
    if found is None:
        raise NotFound(f"domain {domain.name()!r} has no snapshot {snapshot!r}")
    return found


def _info(snap: libvirt.virDomainSnapshot) -> SnapshotInfo:
    root = ET.fromstring(snap.getXMLDesc(0))
    created = datetime.fromtimestamp(int(root.findtext("creationTime", "0")), UTC)
    memory = root.find("memory")
    with_memory = (memory is not None and memory.get("snapshot") == "internal") or root.findtext("state") in (
        "running", "paused")
    return SnapshotInfo(name=snap.getName(), created=created.isoformat(timespec="seconds"),
                        with_memory=with_memory, description=root.findtext("description", ""))
