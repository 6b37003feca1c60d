"""Which folders may be shared, which mechanism enforces read-only, and the device XML."""

from __future__ import annotations

import stat
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from agentbox.backends.base import DiskSpec, FilesystemSpec
from agentbox.backends.libvirt.device_xml import filesystem_xml, find_disk, find_filesystem, hotplug_disk_xml
from agentbox.errors import InvalidInput
from agentbox.model.shares import (EXAMPLES_KEPT, HostFacts, NotReadableTally, ShareMechanism, guest_may_read,
                                   is_special, not_readable_hint, rank_mechanisms)
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
    for sub in ("project", ".ssh/keys", ".gnupg", "agentbox-data", ".aws", ".config/gcloud", ".kube", ".docker",
                ".azure", ".password-store", ".local/share/keyrings"):
        (home / sub).mkdir(parents=True)
    (home / "file.txt").write_text("x")
    (home / "link-to-ssh").symlink_to(home / ".ssh")
    return home


@pytest.mark.parametrize(("source", "why"), [
    ("/", "whole host"), ("{home}", "whole home"), ("{home}/.ssh", "credentials live"),
    ("{home}/.ssh/keys", "credentials live"), ("{home}/.gnupg", "credentials live"),
    ("{home}/link-to-ssh", "credentials live"), ("{home}/missing", "no such folder"),
    ("{home}/file.txt", "not a folder"), ("{home}/agentbox-data", "agentbox's own"),
    ("{home}/..", "contains your home"),
])
def test_dangerous_folders_are_refused_with_the_reason(home: Path, source: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        validate_share_source(source=source.format(home=home), home=home, own_dirs=[home / "agentbox-data"])


@pytest.mark.parametrize("folder", [".aws", ".config", ".config/gcloud", ".kube", ".docker", ".azure",
                                    ".password-store", ".local/share/keyrings", ".local", ".local/share"])
@pytest.mark.parametrize("allow_system_folder", [False, True])
def test_credential_folders_and_folders_holding_one_are_never_shared(home: Path, folder: str,
                                                                    allow_system_folder: bool) -> None:
    with pytest.raises(InvalidInput, match="credentials live") as refused:
        validate_share_source(source=str(home / folder), home=home, own_dirs=[],
                              allow_system_folder=allow_system_folder)
    assert "never shared" in (refused.value.hint or "")


def test_a_credential_folder_is_refused_where_its_link_points(home: Path, tmp_path: Path) -> None:
    real = tmp_path / "elsewhere" / "kube"
    real.mkdir(parents=True)
    (home / ".kube").rmdir()
    (home / ".kube").symlink_to(real)
    with pytest.raises(InvalidInput, match="credentials live"):
        validate_share_source(source=str(real), home=home, own_dirs=[])


@pytest.mark.parametrize("folder", ["/etc", "/proc", "/dev", "/sys", "/var", "/var/log", "/root", "/boot", "/run",
                                    "/usr", "/usr/lib", "/bin", "/sbin", "/lib"])
def test_system_folders_are_refused_naming_the_rule_and_the_override(home: Path, folder: str) -> None:
    if not Path(folder).is_dir():
        pytest.skip(f"{folder} is not a folder on this host")
    with pytest.raises(InvalidInput, match="system folder") as refused:
        validate_share_source(source=folder, home=home, own_dirs=[])
    assert "--allow-system-folder" in (refused.value.hint or "")


def test_a_link_to_a_system_folder_is_refused(home: Path, tmp_path: Path) -> None:
    (tmp_path / "innocent").symlink_to("/etc")
    with pytest.raises(InvalidInput, match="refusing to share /etc: it is or contains the system folder /etc"):
        validate_share_source(source=str(tmp_path / "innocent"), home=home, own_dirs=[])


def test_a_system_folder_is_shared_only_with_the_override(home: Path) -> None:
    assert validate_share_source(source="/etc", home=home, own_dirs=[], allow_system_folder=True) == Path("/etc")


def test_a_home_under_a_system_folder_keeps_its_own_folders_shareable() -> None:
    # As for root (/root) or a service user (/var/lib/NAME): the home's own rules apply instead.
    with tempfile.TemporaryDirectory(dir="/var/tmp") as raw:
        home = Path(raw).resolve()
        (home / "project").mkdir()
        (home / ".ssh").mkdir()
        assert validate_share_source(source=str(home / "project"), home=home, own_dirs=[]) == home / "project"
        with pytest.raises(InvalidInput, match="credentials live"):
            validate_share_source(source=str(home / ".ssh"), home=home, own_dirs=[])
        with pytest.raises(InvalidInput, match="system folder /var"):
            validate_share_source(source="/var/log", home=home, own_dirs=[])


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


def test_without_a_mapping_the_guest_user_reads_only_what_the_host_modes_let_uid_1000_read() -> None:
    def may(mode: int, uid: int = 4242, gid: int = 4242) -> bool:
        return guest_may_read(mode=mode, uid=uid, gid=gid, guest_uid=1000, guest_gid=1000)
    assert not may(stat.S_IFREG | 0o600)  # mktemp's file, someone else's
    assert not may(stat.S_IFDIR | 0o700)  # mktemp -d
    assert may(stat.S_IFREG | 0o600, uid=1000)
    assert may(stat.S_IFREG | 0o640, gid=1000) and not may(stat.S_IFREG | 0o604, gid=1000)
    assert may(stat.S_IFREG | 0o644) and not may(stat.S_IFREG | 0o200, uid=1000)
    assert not may(stat.S_IFDIR | 0o744)  # listed but not entered is not readable
    assert may(stat.S_IFDIR | 0o755) and may(stat.S_IFLNK | 0o777, uid=0)


def test_sockets_fifos_and_devices_are_special_and_files_folders_links_are_not() -> None:
    assert all(is_special(kind | 0o644) for kind in (stat.S_IFSOCK, stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK))
    assert not any(is_special(kind | 0o644) for kind in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK))


def test_what_cannot_be_read_is_counted_whole_and_shown_by_a_few_examples() -> None:
    tally = NotReadableTally()
    assert tally.result().summary() == ""
    for n in range(EXAMPLES_KEPT + 3):
        tally.add(path=f"f{n}", why="owner 4242, mode 0600")
    result = tally.result()
    assert result.count == EXAMPLES_KEPT + 3 and len(result.examples) == EXAMPLES_KEPT
    assert result.summary().startswith(f"{EXAMPLES_KEPT + 3} item(s) cannot be read in the guest (f0: owner 4242")
    assert result.summary().endswith("; and 3 more)")


def test_the_hint_says_what_to_do_for_each_way_of_sharing() -> None:
    assert "bindfs" in not_readable_hint(mechanism=ShareMechanism.VIRTIOFS_RO_BIND, mapped=False)
    assert "left out of the copy" in not_readable_hint(mechanism=ShareMechanism.COPY_DISK, mapped=True)
    assert "root on the host cannot read" in not_readable_hint(mechanism=ShareMechanism.VIRTIOFS_RO_BIND,
                                                               mapped=True)


def test_the_bind_mechanism_says_whether_every_file_will_be_readable() -> None:
    reasons = {facts.bindfs: {c.mechanism: c.reason for c in rank_mechanisms(facts=facts)}
               for facts in (HERE, HostFacts(**{**HERE.__dict__, "bindfs": True}))}
    assert "bindfs" in reasons[True][ShareMechanism.VIRTIOFS_RO_BIND]
    assert "uid 1000" in reasons[False][ShareMechanism.VIRTIOFS_RO_BIND]
