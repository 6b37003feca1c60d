"""The Backend contract, run against the Fake and the libvirt backend (test driver).

Services are tested on the Fake; these tests are what makes that trustworthy.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import libvirt
import pytest

from agentbox.backends.base import Backend, Capabilities, DomainState
from agentbox.backends.fake import FakeBackend
from agentbox.backends.libvirt import LibvirtBackend
from agentbox.backends.accel import detect_accel
from agentbox.backends.libvirt.errors import translate
from agentbox.errors import (
    AlreadyExists,
    BackendError,
    BackendUnavailable,
    ImageError,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from agentbox.model.workspace import Accel

if TYPE_CHECKING:
    from conftest import World  # tests/contract/conftest.py

OWNER = "contract-owner"  # as in conftest.py (not importable from here: no package)

# --- domains ---------------------------------------------------------------------------


def test_define_shows_a_stopped_domain_with_its_metadata(world: World) -> None:
    spec = world.spec("alpha")
    world.backend.define(spec=spec)
    info = world.backend.get(name="alpha")
    assert info is not None
    assert (info.name, info.state, info.metadata) == ("alpha", DomainState.STOPPED, spec.metadata)


def test_start_destroy_and_destroy_again(world: World) -> None:
    world.backend.define(spec=world.spec("alpha"))
    world.backend.start(name="alpha")
    assert world.backend.get(name="alpha").state is DomainState.RUNNING
    world.backend.destroy(name="alpha")
    assert world.backend.get(name="alpha").state is DomainState.STOPPED
    world.backend.destroy(name="alpha")  # already off: fine
    assert world.backend.get(name="alpha").state is DomainState.STOPPED


def test_start_when_running_fails(world: World) -> None:
    world.backend.define(spec=world.spec("alpha"))
    world.backend.start(name="alpha")
    with pytest.raises(BackendError):
        world.backend.start(name="alpha")


def test_shutdown_asks_a_running_guest(world: World) -> None:
    world.backend.define(spec=world.spec("alpha"))
    with pytest.raises(BackendError):
        world.backend.shutdown(name="alpha")  # not running
    world.backend.start(name="alpha")
    world.backend.shutdown(name="alpha")
    # Both stand-ins power off at once; a real guest may take its time, and a real QEMU
    # with no OS (firmware only) has nobody to press the power button for: it is a request.
    expected = DomainState.STOPPED if world.instant_shutdown else DomainState.RUNNING
    assert world.backend.get(name="alpha").state is expected


def test_undefine_forgets_the_domain(world: World) -> None:
    world.backend.define(spec=world.spec("alpha"))
    world.backend.undefine(name="alpha")
    assert world.backend.get(name="alpha") is None
    assert world.backend.list_domains() == ()
    world.backend.define(spec=world.spec("alpha"))  # the name is free again


def test_undefine_refuses_a_running_domain(world: World) -> None:
    world.backend.define(spec=world.spec("alpha"))
    world.backend.start(name="alpha")
    with pytest.raises(BackendError) as info:
        world.backend.undefine(name="alpha")
    assert "destroy" in (info.value.hint or "")
    assert world.backend.get(name="alpha") is not None


def test_list_domains_lists_ours_only(world: World) -> None:
    assert world.backend.list_domains() == ()
    for name in ("beta", "alpha"):
        world.backend.define(spec=world.spec(name))
    world.backend.start(name="beta")
    listed = world.backend.list_domains()
    assert [(info.name, info.state) for info in listed] == [
        ("alpha", DomainState.STOPPED),
        ("beta", DomainState.RUNNING),
    ]
    assert {info.metadata.owner for info in listed} == {world.owner}


@pytest.mark.parametrize("role", ["foreign", "theirs", "missing"])
def test_other_domains_are_invisible(world: World, role: str) -> None:
    assert world.backend.get(name=world.named(role)) is None


@pytest.mark.parametrize("method", ["start", "shutdown", "destroy", "undefine"])
@pytest.mark.parametrize("role", ["foreign", "theirs", "missing"])
def test_other_domains_are_untouchable(world: World, method: str, role: str) -> None:
    with pytest.raises(NotFound):
        getattr(world.backend, method)(name=world.named(role))


@pytest.mark.parametrize("role", ["foreign", "theirs", "alpha"])
def test_define_of_a_taken_name_fails(world: World, role: str) -> None:
    world.backend.define(spec=world.spec("alpha"))
    with pytest.raises(AlreadyExists):
        world.backend.define(spec=world.spec(world.named(role)))


def test_define_for_another_owner_is_refused(world: World) -> None:
    with pytest.raises(InvalidInput):
        world.backend.define(spec=world.spec("alpha", owner=world.other_owner))
    assert world.backend.list_domains() == ()


def test_define_of_an_unusable_spec_is_refused(world: World) -> None:
    with pytest.raises(InvalidInput):
        world.backend.define(spec=replace(world.spec("alpha"), disks=()))
    assert world.backend.get(name="alpha") is None


def test_capabilities_name_a_resolved_accelerator(world: World) -> None:
    caps = world.backend.capabilities
    assert isinstance(caps, Capabilities)
    assert caps.accel in (Accel.KVM, Accel.TCG)
    assert caps.ram_snapshots
    world.backend.define(spec=world.spec("alpha"))
    assert world.backend.capabilities_of(name="alpha") == caps  # one backend: alike for every domain


# --- disks -----------------------------------------------------------------------------


@pytest.fixture()
def backing(tmp_path: Path) -> Path:
    path = tmp_path / "base.raw"
    with path.open("wb") as file:
        file.truncate(1024 * 1024)  # a raw image is just its bytes
    return path


def test_overlay_create_and_delete(world: World, backing: Path) -> None:
    overlay = world.tmp / "ws" / "root.qcow2"
    overlay.parent.mkdir()
    world.backend.create_overlay(path=overlay, backing=backing, backing_format="raw", size_gib=2)
    assert overlay.is_file()
    assert overlay.stat().st_mode & 0o077 == 0
    with pytest.raises(AlreadyExists):
        world.backend.create_overlay(path=overlay, backing=backing, backing_format="raw", size_gib=2)
    world.backend.delete_volume(path=overlay)
    assert not overlay.exists()
    world.backend.delete_volume(path=overlay)  # already gone: fine
    assert backing.stat().st_size == 1024 * 1024  # never written


def test_overlay_needs_its_backing(world: World) -> None:
    overlay = world.tmp / "root.qcow2"
    with pytest.raises(ImageError):
        world.backend.create_overlay(path=overlay, backing=world.tmp / "nope.qcow2", backing_format="qcow2", size_gib=2)
    assert not overlay.exists()


@pytest.mark.parametrize(("backing_format", "size_gib"), [("vmdk", 2), ("raw", 0)])
def test_overlay_refuses_bad_arguments(world: World, backing: Path, backing_format: str, size_gib: int) -> None:
    overlay = world.tmp / "root.qcow2"
    with pytest.raises(InvalidInput):
        world.backend.create_overlay(path=overlay, backing=backing, backing_format=backing_format, size_gib=size_gib)
    assert not overlay.exists()


# --- libvirt only ----------------------------------------------------------------------


def test_libvirt_overlay_is_qcow2_over_the_backing(libvirt_world: World, backing: Path) -> None:
    overlay = backing.parent / "root.qcow2"
    libvirt_world.backend.create_overlay(path=overlay, backing=backing, backing_format="raw", size_gib=3)
    info = json.loads(
        subprocess.run(["qemu-img", "info", "--output=json", str(overlay)], check=True, capture_output=True).stdout
    )
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 3 * 1024**3
    assert info["backing-filename"] == str(backing.resolve())
    assert info["backing-filename-format"] == "raw"


def test_libvirt_overlay_smaller_than_its_image_is_refused(libvirt_world: World, tmp_path: Path) -> None:
    big = tmp_path / "big.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(big), "5G"], check=True)
    with pytest.raises(InvalidInput, match="smaller"):
        libvirt_world.backend.create_overlay(path=tmp_path / "o.qcow2", backing=big, backing_format="qcow2", size_gib=2)
    assert not (tmp_path / "o.qcow2").exists()


def test_libvirt_undefine_removes_snapshot_metadata(libvirt_world: World) -> None:
    backend = libvirt_world.backend
    assert isinstance(backend, LibvirtBackend)
    backend.define(spec=libvirt_world.spec("alpha"))
    # The backend's own connection: opening the test URI again would give a new world.
    domain = backend._connection().lookupByName("alpha")  # a test-only peek at the private connection
    domain.snapshotCreateXML("<domainsnapshot><name>clean</name></domainsnapshot>")
    assert domain.snapshotNum() == 1
    backend.undefine(name="alpha")  # test driver: falls back to the flags it supports
    assert backend.get(name="alpha") is None


def test_libvirt_domain_type_follows_the_uri() -> None:
    assert LibvirtBackend(uri="test:///default", owner=OWNER, accel=Accel.TCG).domain_type == "test"
    assert LibvirtBackend(uri="qemu:///system", owner=OWNER, accel=Accel.TCG).domain_type == "qemu"
    kvm = LibvirtBackend(uri="qemu:///system", owner=OWNER, accel=Accel.KVM)
    if detect_accel() is Accel.KVM:
        assert kvm.domain_type == "kvm"
    else:  # asking for KVM where it cannot work is refused, never silently slow
        with pytest.raises(BackendError, match="KVM was requested"):
            kvm.domain_type  # noqa: B018
    caps = LibvirtBackend(uri="qemu:///system", owner=OWNER, accel=Accel.AUTO).capabilities
    assert caps.hotplug and caps.accel is not Accel.AUTO
    assert not LibvirtBackend(uri="test:///default", owner=OWNER, accel=Accel.TCG).capabilities.hotplug


def test_libvirt_refuses_other_drivers() -> None:
    with pytest.raises(InvalidInput):
        LibvirtBackend(uri="xen:///system", owner=OWNER, accel=Accel.TCG)


@pytest.mark.parametrize("uri", ["test:///nonexistent/node.xml", "qemu+tcp://127.0.0.1:1/system"])
def test_libvirt_unreachable_is_unavailable_with_a_hint(uri: str) -> None:
    backend = LibvirtBackend(uri=uri, owner=OWNER, accel=Accel.TCG)
    with pytest.raises(BackendUnavailable) as info:
        backend.list_domains()
    assert "libvirtd" in (info.value.hint or "")


def _error(code: int, domain: int = libvirt.VIR_FROM_QEMU, message: str = "boom") -> libvirt.libvirtError:
    err = libvirt.libvirtError(message)
    err.err = (code, domain, message, 2, None, None, None, 0, 0)  # what libvirt fills in
    return err


@pytest.mark.parametrize(
    ("code", "domain", "message", "expected"),
    [
        (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_FROM_QEMU, "Domain not found", NotFound),
        (libvirt.VIR_ERR_DOM_EXIST, libvirt.VIR_FROM_QEMU, "exists", AlreadyExists),
        (libvirt.VIR_ERR_OPERATION_DENIED, libvirt.VIR_FROM_QEMU, "denied", PermissionDenied),
        (libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_FROM_RPC, "auth", PermissionDenied),
        (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, "connect: Permission denied", PermissionDenied),
        (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, "Cannot write data: Broken pipe", BackendUnavailable),
        (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_FROM_NONE, "no connection", BackendUnavailable),
        (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_FROM_DOMAIN, "not running", BackendError),
    ],
)
def test_translate(code: int, domain: int, message: str, expected: type) -> None:
    translated = translate(_error(code, domain, message), action="do things")
    assert type(translated) is expected
    assert translated.message == f"do things: {message}"


def test_translate_a_full_storage_dir_says_where_to_free_space() -> None:
    err = _error(libvirt.VIR_ERR_OPERATION_FAILED, libvirt.VIR_FROM_QEMU,
                 "operation failed: Error while writing VM state: No space left on device")
    translated = translate(err, action="snapshot domain 'x' as 'checkpoint-a'")
    assert type(translated) is BackendError and "storage dir is full" in (translated.hint or "")


def test_translate_while_connecting_is_unavailable() -> None:
    err = _error(libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_FROM_TEST, "failed to parse")
    assert isinstance(translate(err, action="connect", connecting=True), BackendUnavailable)


# --- fake only ---------------------------------------------------------------------------


def test_fake_failure_injection_and_ignored_shutdown(fake_world: World) -> None:
    fake = fake_world.backend
    assert isinstance(fake, FakeBackend)
    fake.fail_on.add("start")
    fake.ignore_shutdown = True
    backend: Backend = fake
    backend.define(spec=fake_world.spec("alpha"))
    with pytest.raises(BackendError, match="injected"):
        backend.start(name="alpha")
    fake.fail_on.clear()
    backend.start(name="alpha")
    backend.shutdown(name="alpha")
    assert backend.get(name="alpha").state is DomainState.RUNNING  # the guest ignored ACPI
    fake.set_state("alpha", DomainState.CRASHED)
    assert backend.get(name="alpha").state is DomainState.CRASHED
    assert fake.defined_spec("alpha").name == "alpha"
    assert ("start", "alpha") in fake.calls


# --- snapshots (every backend) -----------------------------------------------------------


def test_snapshot_of_a_running_domain_holds_ram_and_reverts_running(world: World) -> None:
    backend = world.backend
    backend.define(spec=world.spec("alpha"))
    backend.start(name="alpha")
    info = backend.create_snapshot(name="alpha", snapshot="clean", description="after boot")
    assert (info.name, info.with_memory, info.description) == ("clean", True, "after boot")
    with pytest.raises(AlreadyExists):
        backend.create_snapshot(name="alpha", snapshot="clean")
    backend.destroy(name="alpha")
    backend.revert_snapshot(name="alpha", snapshot="clean")
    assert backend.get(name="alpha").state is DomainState.RUNNING
    assert [s.name for s in backend.list_snapshots(name="alpha")] == ["clean"]


def test_snapshot_of_a_stopped_domain_is_disk_only(world: World) -> None:
    backend = world.backend
    backend.define(spec=world.spec("alpha"))
    assert backend.create_snapshot(name="alpha", snapshot="cold").with_memory is False
    backend.revert_snapshot(name="alpha", snapshot="cold")
    assert backend.get(name="alpha").state is DomainState.STOPPED
    backend.delete_snapshot(name="alpha", snapshot="cold")
    assert backend.list_snapshots(name="alpha") == ()
    with pytest.raises(NotFound):
        backend.delete_snapshot(name="alpha", snapshot="cold")
    with pytest.raises(NotFound):
        backend.revert_snapshot(name="alpha", snapshot="cold")


# --- QEMU only ---------------------------------------------------------------------------


def _qemu_processes(state: Path) -> list[str]:
    """Command lines of live processes that use files under `state` (QEMU, virtiofsd)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(state) in cmdline:
            found.append(cmdline)
    return found


def test_qemu_runs_restricted_user_networking_and_destroy_leaves_no_process(qemu_world: World) -> None:
    from agentbox.backends.qemu import QemuBackend

    backend = qemu_world.backend
    assert isinstance(backend, QemuBackend)
    spec = qemu_world.spec("alpha")
    backend.define(spec=spec)
    backend.start(name="alpha")
    [cmdline] = _qemu_processes(backend.state_dir / "alpha")
    assert f"user,id=agentnet,restrict=on,hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22" in cmdline
    with socket.create_connection(("127.0.0.1", spec.ssh_port), timeout=5):
        pass  # the SSH forward listens on loopback
    backend.destroy(name="alpha")
    assert _qemu_processes(backend.state_dir) == []
    assert [p.name for p in (backend.state_dir / "alpha").iterdir()] == ["domain.json"]  # no runtime file
    backend.undefine(name="alpha")
    assert not (backend.state_dir / "alpha").exists()


def test_qemu_that_died_shows_stopped_and_starts_again(qemu_world: World) -> None:
    backend = qemu_world.backend
    backend.define(spec=qemu_world.spec("alpha"))
    backend.start(name="alpha")
    home = qemu_world.tmp / "qemu" / "alpha"
    identity = json.loads((home / "qemu.json").read_text())
    os.kill(identity["pid"], signal.SIGKILL)  # QEMU crashed, or someone killed it
    for _ in range(200):
        if backend.get(name="alpha").state is DomainState.STOPPED:
            break
        time.sleep(0.05)
    assert backend.get(name="alpha").state is DomainState.STOPPED
    backend.start(name="alpha")  # its stale socket and pid file are no obstacle
    assert backend.get(name="alpha").state is DomainState.RUNNING


def test_qemu_takes_a_reused_pid_for_no_domain(qemu_world: World) -> None:
    backend = qemu_world.backend
    backend.define(spec=qemu_world.spec("alpha"))
    home = qemu_world.tmp / "qemu" / "alpha"
    # A stale record naming a live process (this one) with another start time: not ours.
    (home / "qemu.json").write_text(json.dumps({"pid": os.getpid(), "start": 1}))
    assert backend.get(name="alpha").state is DomainState.STOPPED
    backend.destroy(name="alpha")  # never signals that process
    assert not (home / "qemu.json").exists()


def test_qemu_hot_plugs_disks_and_shares_live_only(qemu_world: World, backing: Path) -> None:
    from agentbox.backends.base import DiskSpec, FilesystemSpec
    from agentbox.backends.qemu import QemuBackend

    backend = qemu_world.backend
    assert isinstance(backend, QemuBackend)
    backend.define(spec=qemu_world.spec("alpha"))
    with pytest.raises(BackendError):
        backend.attach_disk(name="alpha", disk=DiskSpec(path=backing, format="raw", readonly=True, serial="copy1"))
    backend.start(name="alpha")
    backend.attach_disk(name="alpha", disk=DiskSpec(path=backing, format="raw", readonly=True, serial="copy1"))
    assert backend.attached(name="alpha") == (frozenset(), frozenset({"cidata", "copy1"}))
    if backend.capabilities.virtiofs:
        source = qemu_world.tmp / "share"
        source.mkdir()
        backend.attach_filesystem(name="alpha", fs=FilesystemSpec(tag="outbox", source=source, driver="virtiofs",
                                                                  readonly=False))
        assert backend.attached(name="alpha")[0] == frozenset({"outbox"})
        with pytest.raises(BackendError, match="non-migratable"):  # as on libvirt: no virtiofs in a RAM snapshot
            backend.create_snapshot(name="alpha", snapshot="with-share")
        assert backend.list_snapshots(name="alpha") == ()
        with pytest.raises(BackendError, match="9p"):
            backend.attach_filesystem(name="alpha", fs=FilesystemSpec(tag="nine", source=source, driver="9p",
                                                                      readonly=True))
    backend.destroy(name="alpha")
    assert _qemu_processes(backend.state_dir) == []  # virtiofsd went with QEMU
    backend.start(name="alpha")
    assert backend.attached(name="alpha") == (frozenset(), frozenset({"cidata"}))


def test_qemu_replaces_a_snapshot_the_disk_holds_but_nobody_listed(qemu_world: World) -> None:
    backend = qemu_world.backend
    backend.define(spec=qemu_world.spec("alpha"))
    backend.start(name="alpha")
    backend.create_snapshot(name="alpha", snapshot="clean-1")
    (qemu_world.tmp / "qemu" / "alpha" / "snapshots.json").write_text("[]")  # killed before the list was written
    assert backend.create_snapshot(name="alpha", snapshot="clean-1").with_memory
    assert [s.name for s in backend.list_snapshots(name="alpha")] == ["clean-1"]


def test_qemu_stopped_snapshot_replaces_an_unlisted_one(qemu_world: World) -> None:
    backend = qemu_world.backend
    spec = qemu_world.spec("alpha")
    backend.define(spec=spec)
    backend.create_snapshot(name="alpha", snapshot="cold")
    (qemu_world.tmp / "qemu" / "alpha" / "snapshots.json").write_text("[]")
    backend.create_snapshot(name="alpha", snapshot="cold")
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(spec.disks[0].path)],
                                     check=True, capture_output=True).stdout)
    assert [s["name"] for s in info["snapshots"]] == ["cold"]  # one, not two of that name


def test_usage_counts_for_a_running_domain_where_the_capability_says_so(world: World) -> None:
    world.backend.define(spec=world.spec("alpha"))
    if not world.backend.capabilities_of(name="alpha").usage_stats:
        pytest.skip("this backend says it cannot read CPU time and disk writes (libvirt's test driver)")
    assert world.backend.usage(name="alpha") is None  # stopped: nothing to count
    world.backend.start(name="alpha")
    first = world.backend.usage(name="alpha")
    assert first is not None and first.cpu_seconds >= 0 and first.disk_write_bytes >= 0
    again = world.backend.usage(name="alpha")
    assert again is not None and again.cpu_seconds >= first.cpu_seconds  # counters only grow while it runs
    world.backend.destroy(name="alpha")
    assert world.backend.usage(name="alpha") is None
