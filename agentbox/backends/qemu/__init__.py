"""The QEMU backend: QEMU driven directly over QMP, no daemon. The only package that
imports `qemu.qmp` (an import-linter contract)."""

from agentbox.backends.qemu.backend import QemuBackend

__all__ = ["QemuBackend"]
