"""One fixture, `world`, giving each contract test a fresh backend: the Fake, the libvirt
backend on its own libvirt test-driver world (test:///TMP/node.xml), and the QEMU backend
for real (TCG) on its own state directory, with real (empty) disks: its guests never get
past the firmware, which is all the contract needs."""

from __future__ import annotations

import socket
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from agentbox.backends.base import Backend, DiskSpec, DomainMetadata, DomainSpec
from agentbox.backends.fake import FakeBackend
from agentbox.backends.libvirt import LibvirtBackend
from agentbox.backends.libvirt.domain_xml import build_domain_xml
from agentbox.backends.qemu import QemuBackend
from agentbox.backends.qemu import definition as qemu_definition
from agentbox.model.workspace import Accel

OWNER = "contract-owner"
FOREIGN = "not-agentbox"  # a domain without agentbox metadata
THEIRS = "other-install"  # agentbox metadata, but another installation's owner tag
OTHER_OWNER = "someone-else"


@dataclass(frozen=True)
class World:
    kind: str
    backend: Backend
    tmp: Path
    owner: str = OWNER
    other_owner: str = OTHER_OWNER
    real_disks: bool = False  # a real QEMU opens its disks, so they must exist
    instant_shutdown: bool = True  # the stand-ins power off at once; firmware ignores ACPI

    def spec(self, name: str, *, owner: str = OWNER) -> DomainSpec:
        spec = make_spec(self.tmp, name, owner=owner)
        if self.real_disks:
            spec = replace(spec, ssh_port=free_port())
            root, seed = spec.disks
            if not root.path.exists():
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(root.path), "1G"], check=True)
                with seed.path.open("wb") as file:
                    file.truncate(1024 * 1024)
        return spec

    def named(self, role: str) -> str:
        """A domain name by role: 'foreign' (no agentbox metadata), 'theirs' (another
        installation's), anything else is taken as a plain name."""
        return {"foreign": FOREIGN, "theirs": THEIRS}.get(role, role)


def make_spec(tmp: Path, name: str, *, owner: str = OWNER) -> DomainSpec:
    return DomainSpec(
        name=name,
        metadata=DomainMetadata(workspace=name, owner=owner, template="debian-12", created="2024-05-01T12:00:00Z"),
        vcpus=1,
        memory_mib=256,
        disks=(
            DiskSpec(path=tmp / f"{name}.qcow2", format="qcow2"),
            DiskSpec(path=tmp / f"{name}-seed.img", format="raw", readonly=True, serial="cidata"),
        ),
        ssh_port=42022,
        console_log=tmp / f"{name}.log",
    )


def write_node_xml(tmp: Path) -> Path:
    """A test-driver world holding a foreign domain and another installation's domain."""
    node = ET.Element("node")
    foreign = ET.SubElement(node, "domain", {"type": "test"})
    ET.SubElement(foreign, "name").text = FOREIGN
    ET.SubElement(foreign, "memory").text = "65536"
    ET.SubElement(ET.SubElement(foreign, "os"), "type").text = "hvm"
    theirs = build_domain_xml(spec=make_spec(tmp, THEIRS, owner=OTHER_OWNER), accel=Accel.TCG, domain_type="test")
    node.append(ET.fromstring(theirs))
    path = tmp / "node.xml"
    ET.ElementTree(node).write(path, encoding="unicode")
    return path


@pytest.fixture()
def fake_world(tmp_path: Path) -> World:
    fake = FakeBackend(owner=OWNER)
    fake.foreign(FOREIGN)
    fake.foreign(THEIRS, owner=OTHER_OWNER)
    return World(kind="fake", backend=fake, tmp=tmp_path)


@pytest.fixture()
def libvirt_world(tmp_path: Path) -> Iterator[World]:
    backend = LibvirtBackend(uri=f"test://{write_node_xml(tmp_path)}", owner=OWNER, accel=Accel.TCG)
    try:
        yield World(kind="libvirt", backend=backend, tmp=tmp_path)
    finally:
        backend.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def qemu_world(tmp_path: Path) -> Iterator[World]:
    state = tmp_path / "qemu"
    (state / FOREIGN).mkdir(parents=True)  # a directory that holds no definition at all
    (state / THEIRS).mkdir()
    theirs = qemu_definition.QemuDomain(spec=make_spec(tmp_path, THEIRS, owner=OTHER_OWNER), accel=Accel.TCG)
    qemu_definition.save(state / THEIRS / "domain.json", theirs)
    backend = QemuBackend(state_dir=state, owner=OWNER, accel=Accel.TCG)
    try:
        yield World(kind="qemu", backend=backend, tmp=tmp_path, real_disks=True, instant_shutdown=False)
    finally:
        for info in backend.list_domains():  # no QEMU outlives its test
            backend.destroy(name=info.name)


@pytest.fixture(params=["fake_world", "libvirt_world", "qemu_world"])
def world(request: pytest.FixtureRequest) -> World:
    return request.getfixturevalue(request.param)
