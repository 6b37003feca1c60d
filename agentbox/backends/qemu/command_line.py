"""The `qemu-system-x86_64` command line for a domain: the same machine the libvirt backend
describes in XML (domain_xml.py), as argv. Pure: no I/O, so it is tested on its own.

Devices are named by agentbox, so the monitor can find them again: boot disks are
`disk-HEX(serial)` (or `boot-N` without a serial) on block nodes `boot-N`; hot-plugged ones
get ids made from their tag or serial (hotplug.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from agentbox.backends.base import DiskSpec, DomainSpec, check_domain_spec
from agentbox.errors import InvalidInput
from agentbox.model.workspace import Accel

QEMU_BINARY = "qemu-system-x86_64"
NETDEV_ID = "agentnet"
NIC_PCI_SLOT = "0x1e"  # as in the libvirt backend: far above the slots QEMU hands out itself
MEMORY_ID = "agentmem"


@dataclass(frozen=True)
class RuntimeFiles:
    """Where the running QEMU keeps its monitor socket and pid file."""

    qmp_socket: Path
    pidfile: Path


def device_id(prefix: str, key: str) -> str:
    """A QEMU id for `key` (a tag or serial): ids allow letters, digits, '-', '.' and '_'
    only, so the key goes in as hex and comes back out with `key_of`."""
    return f"{prefix}-{key.encode().hex()}"


def key_of(prefix: str, qemu_id: str) -> str | None:
    head, sep, tail = qemu_id.partition("-")
    if head != prefix or not sep:
        return None
    try:
        return bytes.fromhex(tail).decode()
    except ValueError:
        return None


def boot_node(index: int) -> str:
    return f"boot-{index}"


def writable_boot_nodes(spec: DomainSpec) -> tuple[str, ...]:
    """The block nodes an internal snapshot covers: every writable boot disk (read-only
    ones, like the seed, never change and may be raw)."""
    return tuple(boot_node(i) for i, disk in enumerate(spec.disks) if not disk.readonly)


def build_argv(*, spec: DomainSpec, accel: Accel, files: RuntimeFiles, loadvm: str = "",
               shared_memory: bool = True) -> list[str]:
    """QEMU as a daemon of its own (`-daemonize`): it outlives the agentbox command that
    starts it, like a libvirt domain, and writes its pid to `files.pidfile`."""
    check_domain_spec(spec)
    if accel is Accel.AUTO:
        raise InvalidInput("the accelerator must be resolved (kvm, tcg or hvf) before starting QEMU")
    machine = f"pc,accel={accel.value}"
    argv = [QEMU_BINARY, "-name", f"guest={_opt(spec.name)}", "-nodefaults", "-no-user-config",
            "-display", "none", "-m", f"{spec.memory_mib}M", "-smp", str(spec.vcpus)]
    if shared_memory:
        # vhost-user-fs (virtiofs) needs guest RAM in shared memory, as in the libvirt XML.
        argv += ["-object", f"memory-backend-memfd,id={MEMORY_ID},size={spec.memory_mib}M,share=on"]
        machine += f",memory-backend={MEMORY_ID}"
    argv += ["-machine", machine]
    if accel in (Accel.KVM, Accel.HVF):
        argv += ["-cpu", "host"]
    if spec.kernel_boot is not None:
        boot = spec.kernel_boot
        # The serial port is the only console, and the console log reads from it.
        argv += ["-kernel", str(boot.kernel), "-initrd", str(boot.initrd),
                 "-append", f"{boot.cmdline} console=ttyS0".strip()]
    for index, disk in enumerate(spec.disks):
        argv += _disk(disk, index)
    argv += ["-chardev", f"file,id=serial0,path={_opt(str(spec.console_log))},append=on", "-serial", "chardev:serial0"]
    argv += ["-device", "virtio-rng-pci"]
    # restrict=on is the security boundary: the guest reaches nothing by itself; the host
    # reaches the guest's SSH through 127.0.0.1 only (DESIGN.md section 3).
    argv += ["-netdev", f"user,id={NETDEV_ID},restrict=on,hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22",
             "-device", f"virtio-net-pci,netdev={NETDEV_ID},bus=pci.0,addr={NIC_PCI_SLOT}"]
    argv += ["-chardev", f"socket,id=qmp,path={_opt(str(files.qmp_socket))},server=on,wait=off",
             "-mon", "chardev=qmp,mode=control"]
    if loadvm:
        argv += ["-loadvm", loadvm]
    argv += ["-daemonize", "-pidfile", str(files.pidfile)]
    return argv


def _disk(disk: DiskSpec, index: int) -> list[str]:
    # The virtio bus: the Debian cloud kernel has no AHCI (DESIGN.md section 3).
    node = {"driver": disk.format, "node-name": boot_node(index), "read-only": disk.readonly,
            "file": {"driver": "file", "filename": str(disk.path), "read-only": disk.readonly}}
    device: dict[str, object] = {"driver": "virtio-blk-pci", "drive": boot_node(index),
                                 "id": device_id("disk", disk.serial) if disk.serial else f"boot-{index}"}
    if disk.serial:
        device["serial"] = disk.serial
    return ["-blockdev", json.dumps(node), "-device", json.dumps(device)]


def _opt(value: str) -> str:
    """A value inside QEMU's key=value,... syntax: a comma is written twice."""
    return value.replace(",", ",,")
