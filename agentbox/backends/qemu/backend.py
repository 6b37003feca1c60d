"""The Backend Protocol with QEMU driven directly: no daemon, QEMU runs as the invoking
user, controlled over QMP. Everything it knows lives in `state_dir` (one directory per
domain, see docs/architecture.md): the definition (`domain.json`), the running QEMU's
identity (`qemu.json`, PID + start time) and pid file, its monitor socket (`qmp.sock`), the
snapshot list, and one virtiofsd socket, identity and log per live share.

A `state_dir` belongs to one agentbox installation (it sits in its data dir); a domain
whose definition names another owner, or a directory without one, is invisible and
untouchable here, and its name cannot be taken.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from agentbox.backends import qemu_img
from agentbox.backends.accel import resolve_accel
from agentbox.backends.base import (
    DomainUsage,
    Capabilities,
    DiskSpec,
    DomainInfo,
    DomainSpec,
    DomainState,
    FilesystemSpec,
    SnapshotInfo,
    check_domain_spec,
)
from agentbox.backends.qemu import definition, hotplug, processes, snapshots
from agentbox.backends.qemu.command_line import RuntimeFiles, build_argv
from agentbox.backends.qemu.definition import QemuDomain
from agentbox.backends.qemu.monitor import Monitor
from agentbox.errors import AlreadyExists, BackendError, InvalidInput, NotFound
from agentbox.host import bind_mounts
from agentbox.model.workspace import Accel

URI_SCHEME = "qemu-direct"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_STOP_TIMEOUT_S = 10.0


class QemuBackend:
    def __init__(self, *, state_dir: Path, owner: str, accel: Accel, env: Mapping[str, str] | None = None) -> None:
        if not owner:
            raise InvalidInput("the backend needs a non-empty owner tag")
        self._dir = state_dir
        self._owner = owner
        self._accel_setting = accel
        self._env = dict(env or {})
        self._resolved_accel: Accel | None = None

    @property
    def state_dir(self) -> Path:
        return self._dir

    @property
    def _accel(self) -> Accel:
        # Resolved on first use, as in the libvirt backend: a bad setting is reported by
        # the command that needs a VM (and by doctor), not by every command.
        if self._resolved_accel is None:
            self._resolved_accel = resolve_accel(setting=self._accel_setting, env=self._env)
        return self._resolved_accel

    def capabilities_of(self, *, name: str) -> Capabilities:
        return self.capabilities  # one backend: the same for every domain

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(ram_snapshots=True, hotplug=True, accel=self._accel,
                            uri=f"{URI_SCHEME}://{self._dir}", virtiofs=self.virtiofs_problem() is None,
                            usage_stats=sys.platform == "linux")  # CPU time is read from /proc

    def virtiofs_problem(self) -> str | None:
        """Why folders cannot be shared by virtiofs here (then shares use copy disks)."""
        if sys.platform != "linux":
            return "virtiofs needs virtiofsd and memfd guest memory, which exist on Linux only"
        if not bind_mounts.find_virtiofsd():
            return "no virtiofsd is installed (Debian: qemu-system-common)"
        if os.geteuid() != 0:
            return "QEMU 7.2's virtiofsd needs root to sandbox itself"
        return None

    # --- domains -----------------------------------------------------------------------

    def define(self, *, spec: DomainSpec) -> None:
        check_domain_spec(spec)
        if spec.metadata.owner != self._owner:
            raise InvalidInput(
                f"domain {spec.name!r} carries owner {spec.metadata.owner!r}, "
                f"but this backend is {self._owner!r}: it could never see it again"
            )
        home = self._home(spec.name)
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            home.mkdir(mode=0o700)
        except FileExistsError:
            raise AlreadyExists(f"a domain named {spec.name!r} already exists", hint="choose another name") from None
        try:
            definition.save(home / "domain.json", QemuDomain(spec=spec, accel=self._accel))
            # Created by the user, so the user can read it after a failed boot.
            os.close(os.open(spec.console_log, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        except BaseException:
            shutil.rmtree(home, ignore_errors=True)
            raise

    def start(self, *, name: str) -> None:
        domain, home = self._require(name, action="start")
        if self._running(home) is not None:
            raise BackendError(f"start domain {name!r}: domain is already running")
        self._launch(domain, home, loadvm="")

    def shutdown(self, *, name: str) -> None:
        _domain, home = self._require(name, action="shut down")
        if self._running(home) is None:
            raise BackendError(f"shut down domain {name!r}: domain is not running")
        with self._monitor(name, home) as monitor:
            monitor.execute("system_powerdown", action=f"shut down domain {name!r}")

    def destroy(self, *, name: str) -> None:
        _domain, home = self._require(name, action="destroy")
        self._power_off(home)

    def undefine(self, *, name: str) -> None:
        _domain, home = self._require(name, action="undefine")
        if self._running(home) is not None:
            raise BackendError(f"domain {name!r} is still running", hint="destroy it first")
        self._power_off(home)  # leftovers of a QEMU that died by itself
        shutil.rmtree(home)

    def get(self, *, name: str) -> DomainInfo | None:
        found = self._lookup(name)
        if found is None:
            return None
        domain, home = found
        state = DomainState.RUNNING if self._running(home) is not None else DomainState.STOPPED
        return DomainInfo(name=name, state=state, metadata=domain.spec.metadata)

    def list_domains(self) -> tuple[DomainInfo, ...]:
        try:
            names = sorted(entry.name for entry in self._dir.iterdir() if entry.is_dir())
        except FileNotFoundError:
            return ()
        except OSError as exc:
            raise BackendError(f"cannot list QEMU domains in {self._dir}: {exc.strerror}") from None
        infos = (self.get(name=name) for name in names)
        return tuple(info for info in infos if info is not None)

    # --- snapshots ---------------------------------------------------------------------

    def create_snapshot(self, *, name: str, snapshot: str, description: str = "") -> SnapshotInfo:
        domain, home = self._require(name, action="snapshot")
        if self._running(home) is None:
            return snapshots.create(home / "snapshots.json", spec=domain.spec, snapshot=snapshot,
                                    description=description, monitor=None)
        with self._monitor(name, home) as monitor:
            return snapshots.create(home / "snapshots.json", spec=domain.spec, snapshot=snapshot,
                                    description=description, monitor=monitor)

    def revert_snapshot(self, *, name: str, snapshot: str) -> None:
        domain, home = self._require(name, action="revert")
        info = snapshots.require(home / "snapshots.json", domain=name, snapshot=snapshot)
        self._power_off(home)
        if info.with_memory:
            self._launch(domain, home, loadvm=snapshot)  # disk and RAM, running
        else:
            snapshots.apply_to_disks(spec=domain.spec, snapshot=snapshot)

    def list_snapshots(self, *, name: str) -> tuple[SnapshotInfo, ...]:
        _domain, home = self._require(name, action="list snapshots of")
        return snapshots.read(home / "snapshots.json")

    def delete_snapshot(self, *, name: str, snapshot: str) -> None:
        domain, home = self._require(name, action="delete a snapshot of")
        if self._running(home) is None:
            snapshots.delete(home / "snapshots.json", spec=domain.spec, snapshot=snapshot, monitor=None)
            return
        with self._monitor(name, home) as monitor:
            snapshots.delete(home / "snapshots.json", spec=domain.spec, snapshot=snapshot, monitor=monitor)

    # --- hot-plugged devices -----------------------------------------------------------

    def attach_filesystem(self, *, name: str, fs: FilesystemSpec) -> None:
        home = self._require_running(name, action=f"attach share {fs.tag!r}")
        problem = self.virtiofs_problem()
        virtiofsd = fs.virtiofsd or bind_mounts.find_virtiofsd()
        if problem is not None or not virtiofsd:
            raise BackendError(f"cannot attach share {fs.tag!r}: {problem}",
                               hint="share it as a copy disk (`share add --mechanism copy-disk`)")
        with self._monitor(name, home) as monitor:
            hotplug.attach_filesystem(monitor, domain_dir=home, fs=fs, virtiofsd=virtiofsd,
                                      virtiofsd_readonly=fs.readonly and bind_mounts.virtiofsd_has_readonly(virtiofsd))

    def detach_filesystem(self, *, name: str, tag: str) -> None:
        _domain, home = self._require(name, action="detach a share from")
        if self._running(home) is None:
            raise NotFound(f"no share {tag!r} is attached to {name!r}")
        with self._monitor(name, home) as monitor:
            hotplug.detach_filesystem(monitor, domain_dir=home, tag=tag)

    def attach_disk(self, *, name: str, disk: DiskSpec) -> None:
        home = self._require_running(name, action=f"attach disk {disk.serial!r}")
        with self._monitor(name, home) as monitor:
            hotplug.attach_disk(monitor, disk=disk)

    def detach_disk(self, *, name: str, serial: str) -> None:
        _domain, home = self._require(name, action="detach a disk from")
        if self._running(home) is None:
            raise NotFound(f"no disk {serial!r} is attached to {name!r}")
        with self._monitor(name, home) as monitor:
            hotplug.detach_disk(monitor, serial=serial)

    def attached(self, *, name: str) -> tuple[frozenset[str], frozenset[str]]:
        _domain, home = self._require(name, action="list the devices of")
        if self._running(home) is None:
            return frozenset(), frozenset()
        with self._monitor(name, home) as monitor:
            return hotplug.attached(monitor)

    # --- disks -------------------------------------------------------------------------

    def create_overlay(self, *, path: Path, backing: Path, backing_format: str, size_gib: int) -> None:
        qemu_img.create_overlay(path=path, backing=backing, backing_format=backing_format, size_gib=size_gib)

    def delete_volume(self, *, path: Path) -> None:
        qemu_img.delete_volume(path=path)

    # --- pausing; no memory files (capabilities memory_restore and evidence are False) ----

    def pause(self, *, name: str) -> None:
        _domain, home = self._require(name, action="pause")
        if self._running(home) is None:
            raise BackendError(f"pause domain {name!r}: domain is not running")
        with self._monitor(name, home) as monitor:
            monitor.execute("stop", action=f"pause domain {name!r}")

    def usage(self, *, name: str) -> DomainUsage | None:
        _domain, home = self._require(name, action="read the usage of")
        identity = self._running(home)
        if identity is None:
            return None
        # QEMU's own CPU time (its vCPU threads do the guest's work; under TCG the
        # translation too), and QMP's block stats: wr_bytes per block device.
        cpu = processes.cpu_seconds(identity)
        with self._monitor(name, home) as monitor:
            stats = monitor.execute("query-blockstats", action=f"read the disk writes of domain {name!r}")
        if cpu is None:
            return None
        entries = stats if isinstance(stats, list) else []
        written = sum(int(entry.get("stats", {}).get("wr_bytes", 0)) for entry in entries if isinstance(entry, dict))
        return DomainUsage(cpu_seconds=cpu, disk_write_bytes=written)

    def resume(self, *, name: str) -> None:
        _domain, home = self._require(name, action="resume")
        if self._running(home) is None:
            return
        with self._monitor(name, home) as monitor:
            monitor.execute("cont", action=f"resume domain {name!r}")

    def save_memory(self, *, name: str, path: Path) -> None:
        raise BackendError("the QEMU backend cannot save a guest's RAM to a file (no warm clones)",
                           hint="create with --no-warm, or use the libvirt backend")

    def restore_memory(self, *, name: str, path: Path, paused: bool = False) -> None:
        raise BackendError("the QEMU backend cannot restore a guest's RAM from a file (no warm clones)",
                           hint="create with --no-warm, or use the libvirt backend")

    def export_disk(self, *, source: Path, target: Path, base: Path, base_format: str) -> None:
        qemu_img.export_disk(source=source, target=target, base=base, base_format=base_format)

    def move_ssh_port(self, *, name: str, old_port: int, new_port: int) -> None:
        raise BackendError("the QEMU backend cannot move a running guest's SSH port (no standby)",
                           hint="agentbox standby NAME off, or use the libvirt backend")

    def drop_ssh_port(self, *, name: str, port: int) -> None:
        self.move_ssh_port(name=name, old_port=port, new_port=0)

    def save_evidence(self, *, name: str, memory: Path, disk: Path) -> None:
        raise BackendError("the QEMU backend cannot keep a guest's RAM and disk as evidence",
                           hint="panic still cuts the network and resets; use the libvirt backend for evidence")

    # --- helpers -----------------------------------------------------------------------

    def _home(self, name: str) -> Path:
        if not _NAME.match(name):
            raise InvalidInput(f"{name!r} cannot name a QEMU domain",
                               hint="letters, digits, '.', '_' and '-', starting with a letter or digit")
        return self._dir / name

    def _lookup(self, name: str) -> tuple[QemuDomain, Path] | None:
        """Our domain `name` and its directory; None if missing, foreign or unreadable."""
        if not _NAME.match(name):
            return None
        home = self._dir / name
        try:
            domain = definition.load(home / "domain.json")
        except (OSError, BackendError):
            return None
        if domain.spec.metadata.owner != self._owner or domain.spec.name != name:
            return None
        return domain, home

    def _require(self, name: str, *, action: str) -> tuple[QemuDomain, Path]:
        found = self._lookup(name)
        if found is None:
            raise NotFound(f"cannot {action} {name!r}: no such agentbox domain")
        return found

    def _require_running(self, name: str, *, action: str) -> Path:
        _domain, home = self._require(name, action=action)
        if self._running(home) is None:
            raise BackendError(f"cannot {action}: domain {name!r} is not running")
        return home

    @staticmethod
    def _files(home: Path) -> RuntimeFiles:
        return RuntimeFiles(qmp_socket=home / "qmp.sock", pidfile=home / "qemu.pid")

    @staticmethod
    def _running(home: Path) -> processes.ProcessIdentity | None:
        return processes.live(home / "qemu.json")

    def _launch(self, domain: QemuDomain, home: Path, *, loadvm: str) -> None:
        self._power_off(home)  # a QEMU that died by itself leaves its socket and virtiofsds
        argv = build_argv(spec=domain.spec, accel=domain.accel, files=self._files(home), loadvm=loadvm,
                          shared_memory=sys.platform == "linux")
        processes.launch_qemu(argv=argv, pidfile=home / "qemu.pid", identity_file=home / "qemu.json",
                              what=f"start domain {domain.spec.name!r}")

    def _power_off(self, home: Path) -> None:
        """No QEMU, no virtiofsd and no runtime file left; fine if none was there."""
        identity = self._running(home)
        if identity is not None:
            # SIGTERM is QEMU's "power cord pulled": it exits at once, then SIGKILL if not.
            processes.stop(identity, timeout_s=_STOP_TIMEOUT_S)
            if not processes.wait_gone(identity, timeout_s=1.0):
                raise BackendError(f"QEMU (pid {identity.pid}) of {home.name!r} did not exit")
        for share in home.glob("fs-*.json"):
            hotplug.stop_virtiofsd(identity_file=share)
        for leftover in ("qemu.json", "qemu.pid", "qmp.sock"):
            (home / leftover).unlink(missing_ok=True)

    @contextmanager
    def _monitor(self, name: str, home: Path) -> Iterator[Monitor]:
        with Monitor(socket=self._files(home).qmp_socket, domain=name) as monitor:
            yield monitor
