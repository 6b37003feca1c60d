"""The error hierarchy every layer raises and the CLI/TUI boundary turns into messages.

Each error carries a plain-language message and, where there is one, a hint saying what
to do about it. The exit code lets scripts tell classes of failure apart.
"""

from __future__ import annotations


class AgentboxError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InvalidInput(AgentboxError):
    """A name, option or value the user gave is not acceptable."""

    exit_code = 2


class SecretsFound(InvalidInput):
    """A folder about to be shared holds likely secrets, and the user chose nothing yet."""

    def __init__(self, message: str, *, hint: str | None = None, findings: tuple[str, ...] = ()) -> None:
        super().__init__(message, hint=hint)
        self.findings = findings


class ConfigError(AgentboxError):
    """A settings or template file is unreadable or invalid (names file:line)."""

    exit_code = 3


class NotFound(AgentboxError):
    exit_code = 4


class AlreadyExists(AgentboxError):
    exit_code = 5


class Busy(AgentboxError):
    """Another agentbox operation holds the workspace."""

    exit_code = 6


class ImageError(AgentboxError):
    """An image could not be fetched, verified or built."""

    exit_code = 7


class ChecksumMismatch(ImageError):
    pass


class BackendUnavailable(AgentboxError):
    """The hypervisor (libvirt) cannot be reached."""

    exit_code = 8


class BackendError(AgentboxError):
    """The hypervisor refused or failed an operation."""

    exit_code = 9


class PermissionDenied(AgentboxError):
    exit_code = 10


class GuestError(AgentboxError):
    """The guest did not come up, answer SSH or finish provisioning in time."""

    exit_code = 11


class HostKeyMismatch(GuestError):
    """The guest presented an SSH host key other than the pinned one: refused."""

    exit_code = 12


class Cancelled(AgentboxError):
    exit_code = 130


class ToolFailed(AgentboxError):
    """An external program (qemu-img, debootstrap, ...) exited with an error."""

    exit_code = 13


class EgressError(AgentboxError):
    """The egress proxy could not start, or its control socket did not answer."""

    exit_code = 14


class EvidenceChanged(AgentboxError):
    """Evidence files no longer hash to what the audit log recorded (or are gone)."""

    exit_code = 15
