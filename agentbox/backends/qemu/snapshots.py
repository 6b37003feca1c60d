"""Internal qcow2 snapshots for the QEMU backend: with RAM through QMP's `snapshot-save`
job while the domain runs (reverted by starting QEMU with `-loadvm`), disk only through
`qemu-img snapshot` while it is stopped. agentbox's record of them (`snapshots.json`, in
the domain's directory) is what the backend lists, like libvirt's snapshot metadata."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from agentbox.backends import qemu_img
from agentbox.backends.base import DomainSpec, SnapshotInfo
from agentbox.backends.qemu.command_line import writable_boot_nodes
from agentbox.backends.qemu.monitor import Monitor
from agentbox.config.atomic_file import write_atomically
from agentbox.errors import AlreadyExists, BackendError, NotFound

JOB_TIMEOUT_S = 600.0  # saving 1 GiB of RAM under a loaded TCG host


def read(path: Path) -> tuple[SnapshotInfo, ...]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ()
    except (OSError, ValueError) as exc:
        raise BackendError(f"unreadable snapshot list {path}: {exc}") from None
    try:
        return tuple(SnapshotInfo(name=str(e["name"]), created=str(e["created"]), with_memory=bool(e["with_memory"]),
                                  description=str(e.get("description", ""))) for e in doc)
    except (KeyError, TypeError) as exc:
        raise BackendError(f"unreadable snapshot list {path}: {exc}") from None


def write(path: Path, infos: tuple[SnapshotInfo, ...]) -> None:
    write_atomically(path=path, data=json.dumps([asdict(i) for i in infos], indent=2).encode())


def find(path: Path, snapshot: str) -> SnapshotInfo | None:
    return next((info for info in read(path) if info.name == snapshot), None)


def require(path: Path, *, domain: str, snapshot: str) -> SnapshotInfo:
    found = find(path, snapshot)
    if found is None:
        raise NotFound(f"domain {domain!r} has no snapshot {snapshot!r}")
    return found


def create(path: Path, *, spec: DomainSpec, snapshot: str, description: str,
           monitor: Monitor | None) -> SnapshotInfo:
    """With RAM through `monitor` (the domain runs), else disk only with qemu-img."""
    if find(path, snapshot) is not None:
        raise AlreadyExists(f"domain {spec.name!r} already has a snapshot {snapshot!r}")
    action = f"snapshot domain {spec.name!r} as {snapshot!r}"
    nodes = writable_boot_nodes(spec)
    if not nodes:
        raise BackendError(f"{action}: the domain has no writable disk to hold it")
    if monitor is not None:
        # The RAM goes into the first writable disk (the root disk), as libvirt does it.
        save: dict[str, object] = {"tag": snapshot, "vmstate": nodes[0], "devices": list(nodes)}
        try:
            _run_job(monitor, "snapshot-save", save, action=action)
        except BackendError as exc:
            if "already exists" not in exc.message:
                raise
            # In the disks but not in our list: a command killed between the two. Unlisted,
            # it is nobody's snapshot; replace it.
            _run_job(monitor, "snapshot-delete", {"tag": snapshot, "devices": list(nodes)}, action=action)
            _run_job(monitor, "snapshot-save", save, action=action)
    else:
        done: list[Path] = []
        try:
            for disk in _writable_disks(spec, action=action):
                if snapshot in _disk_tags(disk):  # unlisted (a killed command): nobody's, replaced
                    qemu_img.run(["qemu-img", "snapshot", "-d", snapshot, str(disk)])
                qemu_img.run(["qemu-img", "snapshot", "-c", snapshot, str(disk)])
                done.append(disk)
        except BaseException:
            for disk in done:  # no half-taken snapshot
                qemu_img.run(["qemu-img", "snapshot", "-d", snapshot, str(disk)])
            raise
    info = SnapshotInfo(name=snapshot, created=datetime.now(UTC).isoformat(timespec="seconds"),
                        with_memory=monitor is not None, description=description)
    write(path, (*read(path), info))
    return info


def apply_to_disks(*, spec: DomainSpec, snapshot: str) -> None:
    """Revert a stopped domain's disks to a disk-only snapshot."""
    for disk in _writable_disks(spec, action=f"revert domain {spec.name!r} to {snapshot!r}"):
        qemu_img.run(["qemu-img", "snapshot", "-a", snapshot, str(disk)])


def delete(path: Path, *, spec: DomainSpec, snapshot: str, monitor: Monitor | None) -> None:
    require(path, domain=spec.name, snapshot=snapshot)
    action = f"delete snapshot {snapshot!r} of domain {spec.name!r}"
    if monitor is not None:
        _run_job(monitor, "snapshot-delete", {"tag": snapshot, "devices": list(writable_boot_nodes(spec))},
                 action=action)
    else:
        for disk in _writable_disks(spec, action=action):
            qemu_img.run(["qemu-img", "snapshot", "-d", snapshot, str(disk)])
    write(path, tuple(info for info in read(path) if info.name != snapshot))


def _writable_disks(spec: DomainSpec, *, action: str) -> list[Path]:
    disks = [d for d in spec.disks if not d.readonly]
    for disk in disks:
        if disk.format != "qcow2":
            raise BackendError(f"{action}: disk {disk.path} is {disk.format}; internal snapshots need qcow2")
    return [d.path for d in disks]


def _disk_tags(disk: Path) -> set[str]:
    out = qemu_img.run(["qemu-img", "info", "--output=json", "-f", "qcow2", str(disk)])
    try:
        return {str(s["name"]) for s in json.loads(out).get("snapshots", [])}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BackendError(f"cannot read the snapshots of {disk}: {exc}") from None


def _run_job(monitor: Monitor, command: str, args: dict[str, object], *, action: str) -> None:
    """Start a QMP job and wait for it to conclude; its error becomes ours."""
    # Unique per call: a job a killed command never dismissed keeps its id in QEMU.
    job = f"agentbox-{command}-{uuid.uuid4().hex[:12]}"
    monitor.execute(command, {"job-id": job, **args}, action=action)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        jobs = monitor.execute("query-jobs", action=action)
        mine = next((j for j in jobs if isinstance(j, dict) and j.get("id") == job), None) \
            if isinstance(jobs, list) else None
        if mine is None:
            raise BackendError(f"{action}: QEMU lost track of job {job}")
        if mine.get("status") == "concluded":
            monitor.execute("job-dismiss", {"id": job}, action=action)
            if mine.get("error"):
                raise BackendError(f"{action}: {mine['error']}")
            return
        if time.monotonic() > deadline:
            raise BackendError(f"{action}: not done within {JOB_TIMEOUT_S:.0f} s")
        time.sleep(0.05)


