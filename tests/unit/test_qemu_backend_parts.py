"""The QEMU backend's pure parts: its command line, its definition file, device ids; the
`backend` setting; the router that keeps a workspace on the backend that made it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from agentbox.backends.accel import resolve_accel
from agentbox.backends.base import DirectKernelBoot, DiskSpec, DomainMetadata, DomainSpec
from agentbox.backends.fake import FakeBackend
from agentbox.backends.qemu.command_line import RuntimeFiles, build_argv, device_id, key_of
from agentbox.backends.qemu.definition import QemuDomain
from agentbox.backends.routing import BackendRouter
from agentbox.config.paths import AppPaths
from agentbox.config.settings import load_settings
from agentbox.errors import BackendError, BackendUnavailable, ConfigError, InvalidInput
from agentbox.model.workspace import Accel, BackendKind


def _spec(tmp: Path) -> DomainSpec:
    return DomainSpec(
        name="agentbox-demo", metadata=DomainMetadata("demo", "owner", "debian-12", "2026-01-01T00:00:00+00:00"),
        vcpus=2, memory_mib=1024,
        disks=(DiskSpec(path=tmp / "odd,name.qcow2", format="qcow2"),
               DiskSpec(path=tmp / "seed.img", format="raw", readonly=True, serial="cidata")),
        ssh_port=40022, console_log=tmp / "console.log",
        kernel_boot=DirectKernelBoot(kernel=tmp / "vmlinuz", initrd=tmp / "initrd", cmdline="root=/dev/vda"))


def _argv(tmp: Path, **kwargs: object) -> list[str]:
    files = RuntimeFiles(qmp_socket=tmp / "qmp.sock", pidfile=tmp / "qemu.pid")
    return build_argv(spec=_spec(tmp), accel=Accel.TCG, files=files, **kwargs)  # type: ignore[arg-type]


def test_the_only_nic_is_restricted_user_networking_with_ssh_on_loopback(tmp_path: Path) -> None:
    argv = _argv(tmp_path)
    netdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-netdev"]
    assert netdevs == ["user,id=agentnet,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22"]
    assert "-nodefaults" in argv  # no default NIC, no VGA, no floppy
    assert argv[argv.index("-machine") + 1] == "pc,accel=tcg,memory-backend=agentmem"


def test_the_seed_is_read_only_and_a_comma_in_a_path_cannot_add_options(tmp_path: Path) -> None:
    argv = _argv(tmp_path)
    blockdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-blockdev"]
    assert '"filename": "' + str(tmp_path / "odd,name.qcow2") + '"' in blockdevs[0]  # JSON: commas are data
    assert '"read-only": true' in blockdevs[1]
    console = argv[argv.index("-chardev") + 1]
    assert console.startswith("file,id=serial0,path=") and "append=on" in console
    assert argv[argv.index("-append") + 1] == "root=/dev/vda console=ttyS0"


def test_revert_starts_from_the_snapshot_and_auto_is_refused(tmp_path: Path) -> None:
    argv = _argv(tmp_path, loadvm="clean")
    assert argv[argv.index("-loadvm") + 1] == "clean"
    assert argv[-3:] == ["-daemonize", "-pidfile", str(tmp_path / "qemu.pid")]
    with pytest.raises(InvalidInput):
        build_argv(spec=_spec(tmp_path), accel=Accel.AUTO,
                   files=RuntimeFiles(qmp_socket=tmp_path / "q", pidfile=tmp_path / "p"))


@pytest.mark.parametrize("key", ["outbox", "proj", "a b/c,d", "ünï"])
def test_device_ids_carry_any_tag_and_come_back(key: str) -> None:
    qemu_id = device_id("fs", key)
    assert all(c.isalnum() or c == "-" for c in qemu_id)
    assert key_of("fs", qemu_id) == key
    assert key_of("disk", qemu_id) is None


def test_the_definition_round_trips_and_a_damaged_one_is_named(tmp_path: Path) -> None:
    domain = QemuDomain(spec=_spec(tmp_path), accel=Accel.TCG)
    assert QemuDomain.from_json(domain.to_json(), source=tmp_path) == domain
    no_boot = replace(domain, spec=replace(domain.spec, kernel_boot=None))
    assert QemuDomain.from_json(no_boot.to_json(), source=tmp_path) == no_boot
    with pytest.raises(BackendError, match="domain.json"):
        QemuDomain.from_json('{"format": 1, "name": "x"}', source=tmp_path / "domain.json")


def test_hvf_is_macos_only() -> None:
    assert resolve_accel(setting=Accel.AUTO, env={}, platform="darwin") is Accel.HVF
    assert resolve_accel(setting=Accel.TCG, env={}, platform="darwin") is Accel.TCG
    with pytest.raises(BackendError, match="macOS"):
        resolve_accel(setting=Accel.HVF, env={}, platform="linux")


# --- the backend setting ---------------------------------------------------------------


def test_backend_setting_and_its_environment_override(tmp_path: Path) -> None:
    paths = AppPaths.under(root=tmp_path)
    assert load_settings(paths=paths, env={}).backend is BackendKind.LIBVIRT
    paths.config_dir.mkdir(parents=True)
    paths.settings_file.write_text("backend: qemu\n")
    settings = load_settings(paths=paths, env={})
    assert settings.backend is BackendKind.QEMU
    assert settings.storage_dir == paths.data_dir / "storage"  # QEMU runs as the user: the user's dirs
    assert load_settings(paths=paths, env={"AGENTBOX_BACKEND": "libvirt"}).backend is BackendKind.LIBVIRT
    with pytest.raises(ConfigError, match="AGENTBOX_BACKEND"):
        load_settings(paths=paths, env={"AGENTBOX_BACKEND": "vbox"})
    paths.settings_file.write_text("accel: tcg\nbackend: xen\n")
    with pytest.raises(ConfigError, match=r"settings.yaml:2: backend: 'xen' is not a backend"):
        load_settings(paths=paths, env={})


# --- the router --------------------------------------------------------------------------


def test_a_domain_stays_on_the_backend_its_record_names(tmp_path: Path) -> None:
    libvirt, qemu = FakeBackend(owner="o"), FakeBackend(owner="o")
    kinds = {"old": BackendKind.LIBVIRT}
    router = BackendRouter(backends={BackendKind.LIBVIRT: libvirt, BackendKind.QEMU: qemu}, default=BackendKind.QEMU,
                           kind_of=kinds.get, kinds_in_use=lambda: frozenset(kinds.values()))
    old = replace(_spec(tmp_path), name="old", metadata=DomainMetadata("old", "o", "t", "c"))
    new = replace(old, name="new", metadata=DomainMetadata("new", "o", "t", "c"))
    router.define(spec=old)  # its record says libvirt
    kinds["new"] = BackendKind.QEMU
    router.define(spec=new)
    router.start(name="old")
    assert [i.name for i in libvirt.list_domains()] == ["old"]
    assert [i.name for i in qemu.list_domains()] == ["new"]
    assert [i.name for i in router.list_domains()] == ["new", "old"]
    assert ("start", "old") in libvirt.calls and ("start", "old") not in qemu.calls
    assert router.kind(name="old") is BackendKind.LIBVIRT and router.kind(name="unknown") is BackendKind.QEMU


def test_a_backend_no_workspace_uses_is_never_asked(tmp_path: Path) -> None:
    libvirt, qemu = FakeBackend(owner="o", fail_on={"list_domains"}), FakeBackend(owner="o")
    router = BackendRouter(backends={BackendKind.LIBVIRT: libvirt, BackendKind.QEMU: qemu}, default=BackendKind.QEMU,
                           kind_of=lambda _: None, kinds_in_use=frozenset)
    assert router.list_domains() == ()
    assert libvirt.calls == []
    with pytest.raises(BackendUnavailable):
        BackendRouter(backends={BackendKind.QEMU: qemu}, default=BackendKind.LIBVIRT, kind_of=lambda _: None,
                      kinds_in_use=frozenset)
