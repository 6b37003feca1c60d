"""Which folders may be shared, which mechanism enforces read-only, and the device XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from agentbox.backends.base import DiskSpec, FilesystemSpec
from agentbox.backends.libvirt.device_xml import filesystem_xml, find_disk, find_filesystem, hotplug_disk_xml
from agentbox.errors import InvalidInput
from agentbox.model.shares import HostFacts, ShareMechanism, rank_mechanisms
from agentbox.services.share_paths import default_tag, parse_share_spec, validate_share_source, validate_tag

HERE = HostFacts(libvirt_version=9_000_000, virtiofsd="/usr/lib/qemu/virtiofsd", virtiofsd_readonly=False,
                 privileged=True, local=True, guest_9p=False, mkfs_ext4=True)


def usable(facts: HostFacts) -> list[ShareMechanism]:
    return [c.mechanism for c in rank_mechanisms(facts=facts) if c.available]


def test_this_kind_of_host_uses_a_read_only_bind_then_a_copy() -> None:
    assert usable(HERE) == [ShareMechanism.VIRTIOFS_RO_BIND, ShareMechanism.COPY_DISK]


def test_libvirt_11_with_a_readonly_virtiofsd_is_preferred() -> None:
    facts = HostFacts(**{**HERE.__dict__, "libvirt_version": 11_002_000, "virtiofsd_readonly": True})
    assert usable(facts)[0] is ShareMechanism.VIRTIOFS_READONLY


def test_unprivileged_without_9p_falls_back_to_a_copy_and_says_why() -> None:
    facts = HostFacts(**{**HERE.__dict__, "privileged": False})
    choices = {c.mechanism: c for c in rank_mechanisms(facts=facts)}
    assert usable(facts) == [ShareMechanism.COPY_DISK]
    assert "root" in choices[ShareMechanism.VIRTIOFS_RO_BIND].reason
    assert "9p" in choices[ShareMechanism.NINEP_READONLY].reason


def test_a_guest_with_9p_and_no_virtiofsd_uses_9p() -> None:
    facts = HostFacts(**{**HERE.__dict__, "virtiofsd": "", "guest_9p": True})
    assert usable(facts)[0] is ShareMechanism.NINEP_READONLY


def test_nothing_usable_means_nothing_available() -> None:
    facts = HostFacts(libvirt_version=9_000_000, virtiofsd="", virtiofsd_readonly=False, privileged=False,
                      local=True, guest_9p=False, mkfs_ext4=False)
    assert usable(facts) == []


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    for sub in ("project", ".ssh/keys", ".gnupg", "agentbox-data"):
        (home / sub).mkdir(parents=True)
    (home / "file.txt").write_text("x")
    (home / "link-to-ssh").symlink_to(home / ".ssh")
    return home


@pytest.mark.parametrize(("source", "why"), [
    ("/", "whole host"), ("{home}", "whole home"), ("{home}/.ssh", "keys live"), ("{home}/.ssh/keys", "keys live"),
    ("{home}/.gnupg", "keys live"), ("{home}/link-to-ssh", "keys live"), ("{home}/missing", "no such folder"),
    ("{home}/file.txt", "not a folder"), ("{home}/agentbox-data", "agentbox's own"),
    ("{home}/..", "contains your home"),
])
def test_dangerous_folders_are_refused_with_the_reason(home: Path, source: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        validate_share_source(source=source.format(home=home), home=home, own_dirs=[home / "agentbox-data"])


def test_a_project_folder_is_accepted_resolved(home: Path) -> None:
    (home / "alias").symlink_to(home / "project")
    assert validate_share_source(source=str(home / "alias"), home=home, own_dirs=[]) == home / "project"


@pytest.mark.parametrize(("spec", "parsed"), [
    ("/src/app:code", ("/src/app", "code")), ("/src/app", ("/src/app", None)),
    ("/weird:path/x", ("/weird:path/x", None)), ("/a:B", ("/a:B", None)),
])
def test_share_specs_split_a_tag_only_when_one_follows(spec: str, parsed: tuple[str, str | None]) -> None:
    assert parse_share_spec(spec) == parsed


def test_tags() -> None:
    assert default_tag(Path("/x/My Project_2")) == "my-project-2"
    assert default_tag(Path("/x/2024")) == "share-2024"
    with pytest.raises(InvalidInput):
        validate_tag("agentbox-outbox")
    with pytest.raises(InvalidInput):
        validate_tag("Bad_Tag")


def test_virtiofs_over_a_read_only_bind_asks_libvirt_for_nothing_it_lacks() -> None:
    xml = ET.fromstring(filesystem_xml(FilesystemSpec(tag="code", source=Path("/ro/code"), driver="virtiofs",
                                                      readonly=False, virtiofsd="/usr/lib/qemu/virtiofsd")))
    assert xml.find("driver").get("type") == "virtiofs"  # type: ignore[union-attr]
    assert xml.find("binary").get("path") == "/usr/lib/qemu/virtiofsd"  # type: ignore[union-attr]
    assert xml.find("source").get("dir") == "/ro/code" and xml.find("target").get("dir") == "code"  # type: ignore[union-attr]
    assert xml.find("readonly") is None  # libvirt 9 would refuse it for virtiofs


@pytest.mark.parametrize("driver", ["virtiofs", "9p"])
def test_hypervisor_enforced_shares_carry_readonly(driver: str) -> None:
    xml = ET.fromstring(filesystem_xml(FilesystemSpec(tag="code", source=Path("/src"), driver=driver, readonly=True)))
    assert xml.find("readonly") is not None
    assert xml.get("accessmode") == ("passthrough" if driver == "virtiofs" else "mapped")


def test_a_copy_disk_is_hot_plugged_read_only_on_a_free_target() -> None:
    xml = hotplug_disk_xml(DiskSpec(path=Path("/s/share.img"), format="raw", readonly=True, serial="abshare-1"),
                           used_targets={"vda", "vdb"})
    element = ET.fromstring(xml)
    assert element.find("target").get("dev") == "vdc"  # type: ignore[union-attr]
    assert element.find("readonly") is not None and element.findtext("serial") == "abshare-1"
    filesystem = filesystem_xml(FilesystemSpec('t', Path('/x'), 'virtiofs', False))
    domain = f"<domain><devices>{xml}{filesystem}</devices></domain>"
    assert find_disk(domain, serial="abshare-1") is not None and find_filesystem(domain, tag="t") is not None
    assert find_disk(domain, serial="other") is None
