"""Golden domain XML, validated against the real libvirt qemu driver's schema.

Regenerate the golden files (after an intended change, then review the diff) with
`AGENTBOX_REGEN_GOLDEN=1 .venv/bin/pytest tests/unit/test_domain_xml.py`.
"""

from __future__ import annotations

import os
import uuid
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import libvirt
import pytest

from agentbox.backends.base import DirectKernelBoot, DiskSpec, DomainMetadata, DomainSpec
from agentbox.backends.libvirt.domain_xml import (
    with_ssh_port,
    METADATA_NS,
    QEMU_NS,
    build_domain_xml,
    disk_target,
    parse_metadata,
)
from agentbox.errors import BackendError, InvalidInput
from agentbox.model.workspace import Accel

GOLDEN = Path(__file__).parent / "golden"
REGEN_ENV = "AGENTBOX_REGEN_GOLDEN"
WS_DIR = Path("/var/lib/libvirt/images/agentbox/demo")

SPEC = DomainSpec(
    name="agentbox-demo",
    metadata=DomainMetadata(
        workspace="demo", owner="owner-1234", template="debian-12", created="2024-05-01T12:00:00Z"
    ),
    vcpus=2,
    memory_mib=1024,
    disks=(
        DiskSpec(path=WS_DIR / "root.qcow2", format="qcow2"),
        DiskSpec(path=WS_DIR / "seed.img", format="raw", readonly=True, serial="cidata"),
    ),
    ssh_port=42022,
    console_log=WS_DIR / "console.log",
    kernel_boot=DirectKernelBoot(
        kernel=WS_DIR / "vmlinuz", initrd=WS_DIR / "initrd.img", cmdline="root=/dev/vda rw quiet"
    ),
)


def check_golden(name: str, text: str) -> None:
    """Compare with tests/unit/golden/NAME; rewrite it instead when REGEN_ENV is set."""
    path = GOLDEN / name
    if os.environ.get(REGEN_ENV):
        path.write_text(text + "\n", encoding="utf-8")
    assert text + "\n" == path.read_text(encoding="utf-8"), f"{name} differs; see {__doc__}"


@pytest.mark.parametrize(("accel", "golden"), [(Accel.TCG, "domain-tcg.xml"), (Accel.KVM, "domain-kvm.xml")])
def test_golden(accel: Accel, golden: str) -> None:
    check_golden(golden, build_domain_xml(spec=SPEC, accel=accel))


@pytest.mark.parametrize("accel", [Accel.TCG, Accel.KVM])
def test_qemu_driver_accepts_it(accel: Accel) -> None:
    """Not skipped without libvirtd: CI starts it, and a silent skip would hide XML errors."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        conn = libvirt.open("qemu:///system")
    except libvirt.libvirtError as err:
        pytest.fail(f"libvirtd must be running for this test (`virtlogd -d && libvirtd -d` as root): {err}")
    name = f"agentbox-xmltest-{uuid.uuid4().hex[:12]}"
    try:
        xml = build_domain_xml(spec=replace(SPEC, name=name), accel=accel)
        domain = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        try:
            stored = domain.XMLDesc(0)
        finally:
            domain.undefine()
        assert parse_metadata(stored) == SPEC.metadata
        root = ET.fromstring(stored)
        assert root.get("type") == ("kvm" if accel is Accel.KVM else "qemu")
        args = [arg.get("value") for arg in root.iter(f"{{{QEMU_NS}}}arg")]
        assert "user,id=agentnet,restrict=on,hostfwd=tcp:127.0.0.1:42022-:22" in args
        assert root.find("./devices/interface") is None
    finally:
        try:
            conn.lookupByName(name).undefine()  # only if the undefine above never ran
        except libvirt.libvirtError:
            pass
        conn.close()


def test_shape_of_the_domain() -> None:
    root = ET.fromstring(build_domain_xml(spec=SPEC, accel=Accel.TCG))
    assert root.get("type") == "qemu"
    assert root.find("cpu") is None  # TCG: libvirt's default (qemu64)
    assert root.findtext("./os/cmdline") == "root=/dev/vda rw quiet console=ttyS0 no_timer_check"
    assert [d.get("dev") for d in root.iterfind("./devices/disk/target")] == ["vda", "vdb"]
    assert {d.get("bus") for d in root.iterfind("./devices/disk/target")} == {"virtio"}
    seed = root.findall("./devices/disk")[1]
    assert seed.find("readonly") is not None and seed.findtext("serial") == "cidata"
    assert root.findall("./devices/disk")[0].find("readonly") is None
    for absent in ("interface", "graphics", "sound", "input", "video"):
        assert root.find(f"./devices/{absent}") is None, absent
    assert root.find("./devices/serial/log").get("file") == str(SPEC.console_log)
    assert root.find("./features/acpi") is not None
    assert root.findtext("on_crash") == "destroy"


def test_moving_the_ssh_port_changes_only_the_forward_and_keeps_restrict() -> None:
    xml = build_domain_xml(spec=SPEC, accel=Accel.TCG)
    moved = with_ssh_port(xml, port=40123)
    args = [a.get("value") for a in ET.fromstring(moved).iter(f"{{{QEMU_NS}}}arg")]
    assert "user,id=agentnet,restrict=on,hostfwd=tcp:127.0.0.1:40123-:22" in args
    assert not any(f":{SPEC.ssh_port}-" in (a or "") for a in args)
    assert ET.tostring(ET.fromstring(with_ssh_port(moved, port=SPEC.ssh_port))) == ET.tostring(ET.fromstring(xml))
    with pytest.raises(BackendError, match="no agentbox user network"):
        with_ssh_port("<domain><name>other</name></domain>", port=40123)
    # A snapshot of a running domain holds its definition twice (domain and inactiveDomain).
    body = xml.split("?>")[-1]
    inactive = body.replace("<domain ", "<inactiveDomain ", 1).replace("</domain>", "</inactiveDomain>")
    snapshot = f"<domainsnapshot><name>clean-1</name>{body}{inactive}</domainsnapshot>"
    assert with_ssh_port(snapshot, port=40123).count("hostfwd=tcp:127.0.0.1:40123-:22") == 2


def test_namespaces_serialise_with_their_prefixes() -> None:
    xml = build_domain_xml(spec=SPEC, accel=Accel.TCG)
    assert "<qemu:commandline>" in xml and f'xmlns:qemu="{QEMU_NS}"' in xml
    assert "<agentbox:workspace " in xml and f'xmlns:agentbox="{METADATA_NS}"' in xml


def test_kvm_passes_the_host_cpu_through() -> None:
    root = ET.fromstring(build_domain_xml(spec=SPEC, accel=Accel.KVM))
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-passthrough"


def test_domain_type_override_for_the_test_driver() -> None:
    root = ET.fromstring(build_domain_xml(spec=SPEC, accel=Accel.TCG, domain_type="test"))
    assert root.get("type") == "test"


def test_without_kernel_boot_it_boots_the_root_disk() -> None:
    root = ET.fromstring(build_domain_xml(spec=replace(SPEC, kernel_boot=None), accel=Accel.TCG))
    assert root.find("./os/kernel") is None
    assert root.find("./os/boot").get("dev") == "hd"


def test_unresolved_accel_is_refused() -> None:
    with pytest.raises(InvalidInput, match="resolved"):
        build_domain_xml(spec=SPEC, accel=Accel.AUTO)


@pytest.mark.parametrize(
    "change",
    [
        {"disks": ()},
        {"disks": (DiskSpec(path=Path("/x.vmdk"), format="vmdk"),)},
        {"ssh_port": 0},
        {"vcpus": 0},
    ],
)
def test_unusable_specs_are_refused(change: dict) -> None:
    with pytest.raises(InvalidInput):
        build_domain_xml(spec=replace(SPEC, **change), accel=Accel.TCG)


def test_metadata_round_trips_awkward_values() -> None:
    metadata = DomainMetadata(workspace="w", owner="o'\"<&>", template="t &amp; u", created="")
    xml = build_domain_xml(spec=replace(SPEC, metadata=metadata), accel=Accel.TCG)
    assert parse_metadata(xml) == metadata


@pytest.mark.parametrize(
    "xml",
    [
        "<domain type='qemu'><name>x</name></domain>",
        "<domain type='qemu'><name>x</name><metadata><a:workspace xmlns:a='urn:other' "
        "name='x' owner='o' template='t' created='c'/></metadata></domain>",
        f"<domain><metadata><a:workspace xmlns:a='{METADATA_NS}' name='x'/></metadata></domain>",
    ],
    ids=["no-metadata", "other-namespace", "incomplete"],
)
def test_parse_metadata_ignores_what_is_not_ours(xml: str) -> None:
    assert parse_metadata(xml) is None


def test_parse_metadata_rejects_garbage() -> None:
    with pytest.raises(BackendError):
        parse_metadata("<domain")


@pytest.mark.parametrize(("index", "dev"), [(0, "vda"), (1, "vdb"), (25, "vdz"), (26, "vdaa"), (27, "vdab")])
def test_disk_targets(index: int, dev: str) -> None:
    assert disk_target(index) == dev
