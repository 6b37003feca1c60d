"""Device XML for hot-plug (shares, the outbox, copy disks), built with ElementTree."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from agentbox.backends.base import DiskSpec, FilesystemSpec
from agentbox.backends.libvirt.domain_xml import disk_element, disk_target


def filesystem_xml(fs: FilesystemSpec) -> str:
    if fs.driver == "virtiofs":
        # virtiofsd runs per device, started by libvirt; it needs shared guest RAM
        # (memoryBacking in the domain XML).
        element = ET.Element("filesystem", {"type": "mount", "accessmode": "passthrough"})
        ET.SubElement(element, "driver", {"type": "virtiofs"})
        if fs.virtiofsd:
            ET.SubElement(element, "binary", {"path": fs.virtiofsd, "xattr": "off"})
    else:  # 9p: QEMU itself serves it and enforces <readonly/>
        element = ET.Element("filesystem", {"type": "mount", "accessmode": "mapped"})
        ET.SubElement(element, "driver", {"type": "path", "wrpolicy": "immediate"})
    ET.SubElement(element, "source", {"dir": str(fs.source)})
    ET.SubElement(element, "target", {"dir": fs.tag})
    if fs.readonly:
        ET.SubElement(element, "readonly")
    return ET.tostring(element, encoding="unicode")


def hotplug_disk_xml(disk: DiskSpec, *, used_targets: set[str]) -> str:
    index = 0
    while disk_target(index) in used_targets:
        index += 1
    return ET.tostring(disk_element(disk, target=disk_target(index)), encoding="unicode")


def find_filesystem(domain_xml: str, *, tag: str) -> str | None:
    for element in ET.fromstring(domain_xml).iterfind("./devices/filesystem"):
        target = element.find("target")
        if target is not None and target.get("dir") == tag:
            return ET.tostring(element, encoding="unicode")
    return None


def find_disk(domain_xml: str, *, serial: str) -> str | None:
    for element in ET.fromstring(domain_xml).iterfind("./devices/disk"):
        if element.findtext("serial") == serial:
            return ET.tostring(element, encoding="unicode")
    return None


def disk_targets(domain_xml: str) -> set[str]:
    return {target.get("dev", "") for target in ET.fromstring(domain_xml).iterfind("./devices/disk/target")}


def filesystem_tags(domain_xml: str) -> set[str]:
    return {target.get("dir", "") for target in ET.fromstring(domain_xml).iterfind("./devices/filesystem/target")}


def disk_serials(domain_xml: str) -> set[str]:
    return {serial.text or "" for serial in ET.fromstring(domain_xml).iterfind("./devices/disk/serial")}
