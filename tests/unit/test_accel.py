from __future__ import annotations

from pathlib import Path

import pytest

from agentbox.backends.accel import ENV_VAR, detect_accel, kvm_problem, resolve_accel
from agentbox.errors import BackendError, InvalidInput
from agentbox.model.workspace import Accel

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme de pse {extra} sse sse2 hypervisor
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu vme de pse {extra} sse sse2 hypervisor
"""


@pytest.fixture()
def kvm_device(tmp_path: Path) -> Path:
    """A stand-in for /dev/kvm that opens read-write."""
    device = tmp_path / "kvm"
    device.write_bytes(b"")
    return device


def cpuinfo(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(extra=extra))
    return path


@pytest.mark.parametrize("flag", ["vmx", "svm"])
def test_kvm_when_device_opens_and_cpu_virtualises(tmp_path: Path, kvm_device: Path, flag: str) -> None:
    assert detect_accel(cpuinfo=cpuinfo(tmp_path, flag), kvm_device=kvm_device) is Accel.KVM


@pytest.mark.parametrize("extra", ["", "vmxnet", "svm_lock", "ept"])
def test_tcg_without_vmx_or_svm(tmp_path: Path, kvm_device: Path, extra: str) -> None:
    # This host's case: /dev/kvm opens, but the CPU has no virtualisation flag.
    path = cpuinfo(tmp_path, extra)
    assert detect_accel(cpuinfo=path, kvm_device=kvm_device) is Accel.TCG
    assert "neither vmx nor svm" in (kvm_problem(cpuinfo=path, kvm_device=kvm_device) or "")


def test_tcg_without_kvm_device(tmp_path: Path) -> None:
    path = cpuinfo(tmp_path, "vmx")
    assert detect_accel(cpuinfo=path, kvm_device=tmp_path / "missing") is Accel.TCG
    assert detect_accel(cpuinfo=path, kvm_device=tmp_path) is Accel.TCG  # a directory: no O_RDWR


def test_tcg_when_cpuinfo_is_unreadable(tmp_path: Path, kvm_device: Path) -> None:
    assert detect_accel(cpuinfo=tmp_path / "missing", kvm_device=kvm_device) is Accel.TCG


def test_env_wins_over_setting(tmp_path: Path, kvm_device: Path) -> None:
    paths = {"cpuinfo": cpuinfo(tmp_path, "vmx"), "kvm_device": kvm_device}
    assert resolve_accel(setting=Accel.KVM, env={ENV_VAR: "tcg"}, **paths) is Accel.TCG
    assert resolve_accel(setting=Accel.TCG, env={ENV_VAR: " KVM "}, **paths) is Accel.KVM
    assert resolve_accel(setting=Accel.TCG, env={ENV_VAR: ""}, **paths) is Accel.TCG


@pytest.mark.parametrize(("extra", "expected"), [("svm", Accel.KVM), ("", Accel.TCG)])
def test_auto_detects(tmp_path: Path, kvm_device: Path, extra: str, expected: Accel) -> None:
    path = cpuinfo(tmp_path, extra)
    assert resolve_accel(setting=Accel.AUTO, env={}, cpuinfo=path, kvm_device=kvm_device) is expected
    assert resolve_accel(setting=Accel.TCG, env={ENV_VAR: "auto"}, cpuinfo=path, kvm_device=kvm_device) is expected


def test_bad_env_value_names_the_allowed_ones() -> None:
    with pytest.raises(InvalidInput) as info:
        resolve_accel(setting=Accel.AUTO, env={ENV_VAR: "xen"})
    assert "auto, kvm, tcg, hvf" in info.value.message
    assert ENV_VAR in info.value.message


def test_kvm_requested_but_unusable(tmp_path: Path, kvm_device: Path) -> None:
    with pytest.raises(BackendError) as info:
        resolve_accel(setting=Accel.KVM, env={}, cpuinfo=cpuinfo(tmp_path, ""), kvm_device=kvm_device)
    assert "tcg" in (info.value.hint or "")
    with pytest.raises(BackendError, match="cannot be opened"):
        resolve_accel(
            setting=Accel.AUTO, env={ENV_VAR: "kvm"}, cpuinfo=cpuinfo(tmp_path, "vmx"), kvm_device=tmp_path / "no"
        )


def test_tcg_needs_no_detection(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    assert resolve_accel(setting=Accel.TCG, env={}, cpuinfo=missing, kvm_device=missing) is Accel.TCG
