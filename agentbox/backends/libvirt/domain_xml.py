"""libvirt domain XML for an agentbox workspace, built with ElementTree (never strings).

One small function per device, so each decision (and its reason) sits in one place. The
domain has no libvirt-managed network interface: its only NIC is QEMU user networking with
`restrict=on`, passed through `<qemu:commandline>` (DESIGN.md section 3).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from agentbox.backends.base import (
    DirectKernelBoot,
    DiskSpec,
    DomainMetadata,
    DomainSpec,
    check_domain_spec,
)
from agentbox.errors import BackendError, InvalidInput
from agentbox.model.workspace import Accel

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
METADATA_NS = "https://agentbox-vm.invalid/xmlns/workspace/1"

# Registered once so the serialised XML says `qemu:`/`agentbox:` instead of `ns0:`.
ET.register_namespace("qemu", QEMU_NS)
ET.register_namespace("agentbox", METADATA_NS)

NETDEV_ID = "agentnet"
# A PCI slot far above the ones libvirt hands out to its own devices (disks, rng, ...).
NIC_PCI_SLOT = "0x1e"

# DomainMetadata field -> attribute of <agentbox:workspace>.
_META_ATTRS = {"workspace": "name", "owner": "owner", "template": "template", "created": "created"}


def build_domain_xml(*, spec: DomainSpec, accel: Accel, domain_type: str | None = None) -> str:
    """The domain XML for `spec`, pretty-printed. `domain_type` overrides the type derived
    from `accel` (the libvirt test driver wants 'test')."""
    check_domain_spec(spec)
    if domain_type is None:
        if accel is Accel.AUTO:
            raise InvalidInput("the accelerator must be resolved (kvm or tcg) before building a domain")
        domain_type = {Accel.KVM: "kvm", Accel.HVF: "hvf"}.get(accel, "qemu")
    root = ET.Element("domain", {"type": domain_type})
    _text(root, "name", spec.name)
    _metadata(root, spec.metadata)
    _text(root, "memory", str(spec.memory_mib), unit="MiB")
    _text(root, "vcpu", str(spec.vcpus))
    _os(root, spec.kernel_boot)
    _features(root)
    _memory_backing(root)
    if accel is Accel.KVM and domain_type == "kvm":
        ET.SubElement(root, "cpu", {"mode": "host-passthrough"})
    ET.SubElement(root, "clock", {"offset": "utc"})
    _text(root, "on_poweroff", "destroy")
    _text(root, "on_reboot", "restart")
    _text(root, "on_crash", "destroy")
    devices = ET.SubElement(root, "devices")
    for index, disk in enumerate(spec.disks):
        _disk(devices, disk, index)
    _console(devices, spec)
    _rng(devices)
    # No USB at all (no tablet, no controller) and no balloon: less guest-reachable surface.
    ET.SubElement(devices, "controller", {"type": "usb", "model": "none"})
    ET.SubElement(devices, "memballoon", {"model": "none"})
    _user_network(root, spec.ssh_port)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


def parse_metadata(xml: str) -> DomainMetadata | None:
    """agentbox's metadata from a domain's XML; None if it has none (not made by agentbox)
    or it is incomplete."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise BackendError(f"unreadable domain XML from libvirt: {exc}") from exc
    element = root.find(f"./metadata/{{{METADATA_NS}}}workspace")
    if element is None:
        return None
    values = {field: element.get(attr) for field, attr in _META_ATTRS.items()}
    if any(value is None for value in values.values()):
        return None
    return DomainMetadata(**values)  # type: ignore[arg-type]


def disk_target(index: int) -> str:
    """vda, vdb, ..., vdz, vdaa, ... (libvirt's own naming scheme)."""
    letters = ""
    index += 1
    while index > 0:
        index, remainder = divmod(index - 1, 26)
        letters = chr(ord("a") + remainder) + letters
    return "vd" + letters


def _text(parent: ET.Element, tag: str, text: str, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    element.text = text
    return element


def _metadata(root: ET.Element, metadata: DomainMetadata) -> None:
    holder = ET.SubElement(root, "metadata")
    attrs = {attr: getattr(metadata, field) for field, attr in _META_ATTRS.items()}
    ET.SubElement(holder, f"{{{METADATA_NS}}}workspace", attrs)


def _os(root: ET.Element, kernel_boot: DirectKernelBoot | None) -> None:
    os_element = ET.SubElement(root, "os")
    _text(os_element, "type", "hvm", arch="x86_64", machine="pc")
    if kernel_boot is None:
        ET.SubElement(os_element, "boot", {"dev": "hd"})
        return
    _text(os_element, "kernel", str(kernel_boot.kernel))
    _text(os_element, "initrd", str(kernel_boot.initrd))
    # The serial port is the only console (no graphics), and the console log reads from it.
    # no_timer_check: on a loaded host (TCG most of all) the guest's boot-time check of the
    # IO-APIC timer can miss its ticks and panic the kernel ("IO-APIC + timer doesn't work").
    _text(os_element, "cmdline", f"{kernel_boot.cmdline} console=ttyS0 no_timer_check".strip())


def _features(root: ET.Element) -> None:
    # ACPI: graceful shutdown via the power button, and PCI hot-plug (virtiofs shares).
    features = ET.SubElement(root, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")


def _memory_backing(root: ET.Element) -> None:
    # vhost-user-fs (virtiofs) needs guest RAM in shared memory.
    backing = ET.SubElement(root, "memoryBacking")
    ET.SubElement(backing, "source", {"type": "memfd"})
    ET.SubElement(backing, "access", {"mode": "shared"})


def _disk(devices: ET.Element, disk: DiskSpec, index: int) -> None:
    devices.append(disk_element(disk, target=disk_target(index)))


def disk_element(disk: DiskSpec, *, target: str) -> ET.Element:
    """A <disk> on the virtio bus: the Debian cloud kernel has no AHCI, so SATA/cdrom disks
    are invisible to it (also used for hot-plugged copy disks)."""
    element = ET.Element("disk", {"type": "file", "device": "disk"})
    ET.SubElement(element, "driver", {"name": "qemu", "type": disk.format})
    ET.SubElement(element, "source", {"file": str(disk.path)})
    ET.SubElement(element, "target", {"dev": target, "bus": "virtio"})
    if disk.readonly:
        ET.SubElement(element, "readonly")
    if disk.serial:
        _text(element, "serial", disk.serial)
    return element


def _console(devices: ET.Element, spec: DomainSpec) -> None:
    # A pty keeps `virsh console` usable; <log> makes virtlogd copy everything to a file
    # that survives a failed boot, for diagnostics. append='on': virtlogd then writes into
    # an existing file and keeps its owner; with 'off' it recreates it root-owned 0600.
    serial = ET.SubElement(devices, "serial", {"type": "pty"})
    ET.SubElement(serial, "log", {"file": str(spec.console_log), "append": "on"})
    ET.SubElement(serial, "target", {"port": "0"})
    console = ET.SubElement(devices, "console", {"type": "pty"})
    ET.SubElement(console, "target", {"type": "serial", "port": "0"})


def _rng(devices: ET.Element) -> None:
    rng = ET.SubElement(devices, "rng", {"model": "virtio"})
    _text(rng, "backend", "/dev/urandom", model="random")


def _netdev(ssh_port: int) -> str:
    # restrict=on is the security boundary: the guest reaches nothing by itself; the host
    # reaches the guest's SSH through 127.0.0.1 only.
    return f"user,id={NETDEV_ID},restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"


def with_ssh_port(xml: str, *, port: int) -> str:
    """A domain definition (ours) with its guest SSH forward on host port `port`; or a
    snapshot's, which holds the definition once more (`inactiveDomain`) if the domain ran."""
    root = ET.fromstring(xml)
    found = [arg for arg in root.iter(f"{{{QEMU_NS}}}arg") if arg.get("value", "").startswith(f"user,id={NETDEV_ID},")]
    if not found:
        raise BackendError(f"domain {root.findtext('name')!r} has no agentbox user network to move")
    for arg in found:
        arg.set("value", _netdev(port))
    return ET.tostring(root, encoding="unicode")


def _user_network(root: ET.Element, ssh_port: int) -> None:
    netdev = _netdev(ssh_port)
    device = f"virtio-net-pci,netdev={NETDEV_ID},bus=pci.0,addr={NIC_PCI_SLOT}"
    commandline = ET.SubElement(root, f"{{{QEMU_NS}}}commandline")
    for value in ("-netdev", netdev, "-device", device):
        ET.SubElement(commandline, f"{{{QEMU_NS}}}arg", {"value": value})
