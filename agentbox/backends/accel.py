"""Which accelerator guests can use here: KVM when the host really supports it, else TCG.

An openable /dev/kvm is not enough: on hosts whose CPU lacks vmx/svm (e.g. some nested
setups) KVM guests hang at kernel start, so the CPU flags must say so too (DESIGN.md §3).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from agentbox.errors import BackendError, InvalidInput
from agentbox.model.workspace import Accel

ENV_VAR = "AGENTBOX_ACCEL"
_VIRT_FLAGS = frozenset({"vmx", "svm"})
_PROC_CPUINFO = Path("/proc/cpuinfo")
_DEV_KVM = Path("/dev/kvm")


def detect_accel(*, cpuinfo: Path = _PROC_CPUINFO, kvm_device: Path = _DEV_KVM) -> Accel:
    """KVM if `kvm_device` opens read-write and the CPU flags include vmx or svm; else TCG."""
    return Accel.TCG if kvm_problem(cpuinfo=cpuinfo, kvm_device=kvm_device) else Accel.KVM


def kvm_problem(*, cpuinfo: Path = _PROC_CPUINFO, kvm_device: Path = _DEV_KVM) -> str | None:
    """Why KVM is unusable here, in plain words; None if it is usable."""
    try:
        fd = os.open(kvm_device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"{kvm_device} cannot be opened read-write ({exc.strerror})"
    os.close(fd)
    if not _cpu_flags(cpuinfo) & _VIRT_FLAGS:
        return f"the CPU flags in {cpuinfo} have neither vmx nor svm (no hardware virtualisation)"
    return None


def resolve_accel(
    *,
    setting: Accel,
    env: Mapping[str, str],
    cpuinfo: Path = _PROC_CPUINFO,
    kvm_device: Path = _DEV_KVM,
    platform: str = sys.platform,
) -> Accel:
    """The accelerator to use (never AUTO): AGENTBOX_ACCEL wins over the settings value.
    On macOS there is no KVM: `auto` means Hypervisor.framework (hvf) there."""
    requested = setting
    raw = env.get(ENV_VAR, "").strip().lower()
    if raw:
        try:
            requested = Accel(raw)
        except ValueError:
            allowed = ", ".join(accel.value for accel in Accel)
            raise InvalidInput(
                f"{ENV_VAR}={raw!r} is not a valid accelerator; allowed values: {allowed}",
                hint=f"unset {ENV_VAR} or set it to one of: {allowed}",
            ) from None
    if requested is Accel.TCG:
        return Accel.TCG
    if platform == "darwin" and requested in (Accel.AUTO, Accel.HVF):
        return Accel.HVF
    if requested is Accel.HVF:
        raise BackendError(
            "hvf (Hypervisor.framework) was requested but exists only on macOS",
            hint=f"set `accel: auto` in the settings or {ENV_VAR}=auto",
        )
    problem = kvm_problem(cpuinfo=cpuinfo, kvm_device=kvm_device)
    if requested is Accel.AUTO:
        return Accel.TCG if problem else Accel.KVM
    if problem:
        raise BackendError(
            f"KVM was requested but is not usable here: {problem}",
            hint=f"use TCG instead: set `accel: tcg` in the settings or {ENV_VAR}=tcg (slower, works everywhere)",
        )
    return Accel.KVM


def _cpu_flags(cpuinfo: Path) -> frozenset[str]:
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            flags.update(value.split())
    return frozenset(flags)
