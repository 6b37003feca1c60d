"""Several backends behind one: new domains go to the chosen backend, and every later call
goes to the backend the domain's workspace was made on (`kind_of`, from the workspace
records), so a workspace stays on its backend when the settings change.

A backend no workspace uses is never contacted (a Mac without libvirt lists its QEMU
workspaces fine). The same router, keyed by libvirt URI, keeps each libvirt workspace on
the host that made it (the settings' `hosts:`; bootstrap nests it as the libvirt member).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Generic, TypeVar

from agentbox.backends.base import (
    DomainUsage,
    Backend,
    Capabilities,
    DiskSpec,
    DomainInfo,
    DomainSpec,
    FilesystemSpec,
    SnapshotInfo,
)
from agentbox.errors import BackendUnavailable
from agentbox.model.workspace import BackendKind


K = TypeVar("K", BackendKind, str)  # a backend kind, or a libvirt URI


def _label(key: BackendKind | str) -> str:
    return f"the {key.value} backend" if isinstance(key, BackendKind) else f"the libvirt host {key}"


class BackendRouter(Generic[K]):
    def __init__(self, *, backends: Mapping[K, Backend], default: K,
                 kind_of: Callable[[str], K | None],
                 kinds_in_use: Callable[[], frozenset[K]]) -> None:
        if default not in backends:
            raise BackendUnavailable(f"{_label(default)} is not available here")
        self._backends: dict[K, Backend] = dict(backends)
        self._default: K = default
        self._kind_of: Callable[[str], K | None] = kind_of
        self._kinds_in_use: Callable[[], frozenset[K]] = kinds_in_use

    @property
    def default(self) -> K:
        return self._default

    def members(self) -> tuple[tuple[K, Backend], ...]:
        """Every configured backend, the default first (for doctor)."""
        others: list[tuple[K, Backend]] = [(kind, b) for kind, b in self._backends.items() if kind != self._default]
        others.insert(0, (self._default, self._backends[self._default]))
        return tuple(others)

    def kind(self, *, name: str) -> K:
        """The backend domain `name` lives on (new domains: the default)."""
        kind = self._kind_of(name)
        return kind if kind is not None and kind in self._backends else self._default

    def _for(self, name: str) -> Backend:
        kind = self._kind_of(name) or self._default
        if kind not in self._backends:
            raise BackendUnavailable(f"domain {name!r} is on {_label(kind)}, which is not available here",
                                     hint="use agentbox where that backend runs")
        return self._backends[kind]

    @property
    def capabilities(self) -> Capabilities:
        return self._backends[self._default].capabilities

    def capabilities_of(self, *, name: str) -> Capabilities:
        return self._for(name).capabilities

    def define(self, *, spec: DomainSpec) -> None:
        self._for(spec.name).define(spec=spec)

    def start(self, *, name: str) -> None:
        self._for(name).start(name=name)

    def shutdown(self, *, name: str) -> None:
        self._for(name).shutdown(name=name)

    def destroy(self, *, name: str) -> None:
        self._for(name).destroy(name=name)

    def undefine(self, *, name: str) -> None:
        self._for(name).undefine(name=name)

    def get(self, *, name: str) -> DomainInfo | None:
        return self._for(name).get(name=name)

    def list_domains(self) -> tuple[DomainInfo, ...]:
        infos = list(self._backends[self._default].list_domains())
        in_use = self._kinds_in_use()
        for kind, backend in self._backends.items():
            if kind != self._default and kind in in_use:
                infos.extend(info for info in backend.list_domains() if self._kind_of(info.name) == kind)
        return tuple(sorted(infos, key=lambda info: info.name))

    def create_snapshot(self, *, name: str, snapshot: str, description: str = "") -> SnapshotInfo:
        return self._for(name).create_snapshot(name=name, snapshot=snapshot, description=description)

    def revert_snapshot(self, *, name: str, snapshot: str) -> None:
        self._for(name).revert_snapshot(name=name, snapshot=snapshot)

    def list_snapshots(self, *, name: str) -> tuple[SnapshotInfo, ...]:
        return self._for(name).list_snapshots(name=name)

    def delete_snapshot(self, *, name: str, snapshot: str) -> None:
        self._for(name).delete_snapshot(name=name, snapshot=snapshot)

    def attach_filesystem(self, *, name: str, fs: FilesystemSpec) -> None:
        self._for(name).attach_filesystem(name=name, fs=fs)

    def detach_filesystem(self, *, name: str, tag: str) -> None:
        self._for(name).detach_filesystem(name=name, tag=tag)

    def attach_disk(self, *, name: str, disk: DiskSpec) -> None:
        self._for(name).attach_disk(name=name, disk=disk)

    def detach_disk(self, *, name: str, serial: str) -> None:
        self._for(name).detach_disk(name=name, serial=serial)

    def attached(self, *, name: str) -> tuple[frozenset[str], frozenset[str]]:
        return self._for(name).attached(name=name)

    def create_overlay(self, *, path: Path, backing: Path, backing_format: str, size_gib: int) -> None:
        # A workspace's disk is in its domain's directory: that domain's backend (a remote
        # host makes it there); anything else (a golden state's) the default's.
        self._for(path.parent.name).create_overlay(path=path, backing=backing, backing_format=backing_format,
                                                   size_gib=size_gib)

    def export_disk(self, *, source: Path, target: Path, base: Path, base_format: str) -> None:
        self._for(target.parent.name).export_disk(source=source, target=target, base=base, base_format=base_format)

    def delete_volume(self, *, path: Path) -> None:
        self._for(path.parent.name).delete_volume(path=path)

    def save_memory(self, *, name: str, path: Path) -> None:
        self._for(name).save_memory(name=name, path=path)

    def restore_memory(self, *, name: str, path: Path, paused: bool = False) -> None:
        self._for(name).restore_memory(name=name, path=path, paused=paused)

    def move_ssh_port(self, *, name: str, old_port: int, new_port: int) -> None:
        self._for(name).move_ssh_port(name=name, old_port=old_port, new_port=new_port)

    def drop_ssh_port(self, *, name: str, port: int) -> None:
        self._for(name).drop_ssh_port(name=name, port=port)

    def pause(self, *, name: str) -> None:
        self._for(name).pause(name=name)

    def resume(self, *, name: str) -> None:
        self._for(name).resume(name=name)

    def save_evidence(self, *, name: str, memory: Path, disk: Path) -> None:
        self._for(name).save_evidence(name=name, memory=memory, disk=disk)

    def usage(self, *, name: str) -> DomainUsage | None:
        return self._for(name).usage(name=name)
