"""`agentbox doctor`: is this machine ready, and if not, what exactly to do."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from agentbox.backends.accel import detect_accel, resolve_accel
from agentbox.errors import AgentboxError
from agentbox.host import outbox_disk
from agentbox.model.workspace import Accel, BackendKind
from agentbox.backends.base import Backend, DomainState
from agentbox.backends.qemu.command_line import QEMU_BINARY
from agentbox.backends.routing import BackendRouter
from agentbox.services.context import ServiceContext
from agentbox.services.shares import ShareService

MIN_FREE_GIB = 5
MEMINFO = Path("/proc/meminfo")


class CheckStatus(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: CheckStatus
    detail: str
    hint: str = ""


@dataclass(frozen=True)
class DoctorReport:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.status is not CheckStatus.FAIL for c in self.checks)


def run_doctor(*, ctx: ServiceContext) -> DoctorReport:
    return DoctorReport(checks=(
        *_backends(ctx), _accel(ctx), _tool("qemu-img", "qemu-utils", required=True),
        _tool("qemu-system-x86_64", "qemu-system-x86", required=True), _shares(ctx), _egress(ctx),
        _tool("debootstrap", "debootstrap", required=False, why="builds the debian-12 image"),
        _tool("mkfs.ext4", "e2fsprogs", required=False, why="builds the debian-12 image and copy shares"),
        _tool("bindfs", "bindfs", required=False, why="lets the guest's user read every file of a live share"),
        _tool("ssh", "openssh-client", required=True), _build_privilege(),
        _writable("data dir", ctx.paths.data_dir), _writable("storage dir", ctx.settings.storage_dir),
        _writable("image dir", ctx.settings.image_dir), _free_space(ctx.settings.storage_dir), _outbox(ctx),
        _standby_memory(ctx),
    ))


class DoctorService:
    """What `agentbox doctor` and the TUI's doctor screen run."""

    def __init__(self, *, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def run(self) -> DoctorReport:
        return run_doctor(ctx=self._ctx)


def _backends(ctx: ServiceContext) -> tuple[Check, ...]:
    """One check per backend: the one new workspaces use fails the report when it cannot
    work; the other only warns (unless a workspace lives on it: then commands on it fail)."""
    if not isinstance(ctx.backend, BackendRouter):
        return (_backend_check(ctx, BackendKind.LIBVIRT, ctx.backend, chosen=True),)
    return tuple(_backend_check(ctx, kind, backend, chosen=kind is ctx.backend.default)
                 for kind, backend in ctx.backend.members())


def _backend_check(ctx: ServiceContext, kind: BackendKind, backend: Backend, *, chosen: bool) -> Check:
    role = "new workspaces use it" if chosen else f"not chosen (settings: backend: {kind.value} to use it)"
    bad = CheckStatus.FAIL if chosen else CheckStatus.WARN
    where = ctx.settings.libvirt_uri if kind is BackendKind.LIBVIRT else ""
    try:
        count = len(backend.list_domains())
        caps = backend.capabilities
    except AgentboxError as exc:
        return Check(kind.value, bad, f"{where + ': ' if where else ''}{exc.message}; {role}", exc.hint or "")
    if kind is BackendKind.QEMU:
        if not shutil.which(QEMU_BINARY):
            return Check(kind.value, bad, f"{QEMU_BINARY} not found; {role}", "sudo apt-get install qemu-system-x86")
        where = f"QEMU driven directly, state in {urlsplit(caps.uri).path}"
        if not caps.virtiofs:
            where += " (no live shares here: folders are shared as copy disks)"
    else:
        where += " reachable"
    return Check(kind.value, CheckStatus.OK, f"{where}, {count} agentbox VM(s); {role}")


def _accel(ctx: ServiceContext) -> Check:
    detected = detect_accel()
    try:
        chosen = resolve_accel(setting=ctx.settings.accel, env=os.environ)
    except AgentboxError as exc:
        return Check("acceleration", CheckStatus.FAIL, exc.message, exc.hint or "")
    if chosen is Accel.KVM:
        return Check("acceleration", CheckStatus.OK, "KVM usable: guests run at native speed")
    why = "KVM is not usable here" if detected is Accel.TCG else "TCG chosen in settings or AGENTBOX_ACCEL"
    return Check("acceleration", CheckStatus.WARN, f"{why}; guests run under TCG (software emulation, slow)",
                 "enable VT-x/AMD-V in the firmware (or nested virtualisation) and make /dev/kvm usable")


def _tool(program: str, package: str, *, required: bool, why: str = "") -> Check:
    found = shutil.which(program) or (shutil.which(program, path="/usr/sbin:/sbin") if not required else None)
    if found:
        return Check(program, CheckStatus.OK, found)
    detail = f"{program} not found" + (f" ({why})" if why else "")
    return Check(program, CheckStatus.FAIL if required else CheckStatus.WARN, detail,
                 f"sudo apt-get install {package}")


def _shares(ctx: ServiceContext) -> Check:
    try:
        choices = ShareService(ctx=ctx).mechanisms()
    except AgentboxError as exc:
        return Check("shares", CheckStatus.WARN, f"cannot probe: {exc.message}", exc.hint or "")
    usable = [c for c in choices if c.available]
    others = "; ".join(f"{c.mechanism.value}: {c.reason}" for c in choices if not c.available)
    if not usable:
        return Check("shares", CheckStatus.WARN, f"no folder can be shared read-only here ({others})",
                     "sudo apt-get install e2fsprogs qemu-system-common (virtiofsd) bindfs, and run as root for live "
                     "shares")
    best = usable[0]
    detail = (f"read-only shares use {best.mechanism.value} ({best.reason})"
              + (f"; not here: {others}" if others else ""))
    return Check("shares", CheckStatus.OK, detail)


def _egress(ctx: ServiceContext) -> Check:
    try:
        running = [i for i in ctx.backend.list_domains() if i.state is DomainState.RUNNING]
    except AgentboxError as exc:
        return Check("egress", CheckStatus.WARN, f"cannot list workspaces: {exc.message}")
    down = [i.metadata.workspace for i in running
            if not ctx.egress.health(files=ctx.records.files(name=i.metadata.workspace)).forward_connected]
    if down:
        return Check("egress", CheckStatus.WARN,
                     f"no egress (fail closed) in: {', '.join(down)}: its proxy or forward is down",
                     f"agentbox net show {down[0]} restarts them")
    return Check("egress", CheckStatus.OK, f"proxy and forward up for {len(running)} running workspace(s)")


def _outbox(ctx: ServiceContext) -> Check:
    """Whether the outbox's size limit can be enforced here: without it the guest gets no outbox."""
    limit = ctx.settings.outbox_limit_mib
    reason = outbox_disk.unavailable_reason()
    if reason:
        return Check("outbox limit", CheckStatus.WARN,
                     f"cannot be enforced here ({reason}): workspaces get no outbox",
                     "run agentbox as root with e2fsprogs and mount installed (sudo apt-get install e2fsprogs mount)")
    return Check("outbox limit", CheckStatus.OK,
                 f"enforced: each outbox is a loop-mounted ext4 image of {limit} MiB by default "
                 "(create --outbox-mib, outbox --limit-mib, or outbox_limit_mib in settings)")


def _standby_memory(ctx: ServiceContext) -> Check:
    """Each standby copy holds one more guest's RAM while it waits (paused), and after a swap
    the next copy needs as much again: say what they hold against what this host has free."""
    copies = [r for r in ctx.records.readable() if r.standby and r.standby_snapshot and not r.remote_uri]
    if not copies:
        return Check("standby", CheckStatus.OK, "no standby copies: resets revert in place "
                     "(agentbox standby NAME on keeps one ready, for one more guest's RAM)")
    held = sum(r.resources.memory_mib for r in copies)
    detail = (f"{len(copies)} standby cop{'y' if len(copies) == 1 else 'ies'} ({', '.join(r.name for r in copies)})"
              f" hold{'s' if len(copies) == 1 else ''} {held} MiB of guest RAM")
    available = _available_mib()
    if available is None:
        return Check("standby", CheckStatus.OK, f"{detail}; free memory unknown ({MEMINFO} unreadable)")
    largest = max(copies, key=lambda r: r.resources.memory_mib)
    if available < largest.resources.memory_mib:
        return Check("standby", CheckStatus.WARN,
                     f"{detail}; only {available} MiB available: the next copy (after a swap) may not fit",
                     f"agentbox standby {largest.name} off frees {largest.resources.memory_mib} MiB")
    return Check("standby", CheckStatus.OK, f"{detail}; {available} MiB available")


def _available_mib() -> int | None:
    try:
        for line in MEMINFO.read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _build_privilege() -> Check:
    if os.geteuid() == 0:
        return Check("image build", CheckStatus.OK, "running as root: local image builds possible")
    return Check("image build", CheckStatus.WARN, "local image builds (debootstrap) need root",
                 "sudo agentbox image build debian-12 (once; the image is then shared)")


def _writable(label: str, path: Path) -> Check:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if os.access(probe, os.W_OK | os.X_OK):
        return Check(label, CheckStatus.OK, f"{path} writable")
    return Check(label, CheckStatus.FAIL, f"{path}: no write permission (checked {probe})",
                 "run as a user who may write there, or set it in settings.yaml (agentbox doctor shows the file)")


def _free_space(path: Path) -> Check:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    free_gib = usage.free / 2**30
    if free_gib < MIN_FREE_GIB:
        return Check("free disk", CheckStatus.WARN, f"{free_gib:.1f} GiB free at {probe}",
                     f"free at least {MIN_FREE_GIB} GiB: an image and a few workspaces need it")
    return Check("free disk", CheckStatus.OK, f"{free_gib:.1f} GiB free at {probe}")
