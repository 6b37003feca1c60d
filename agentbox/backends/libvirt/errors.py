"""The one place libvirt errors become agentbox errors (always keeping libvirt's message)."""

from __future__ import annotations

import libvirt

from agentbox.errors import (
    AgentboxError,
    AlreadyExists,
    BackendError,
    BackendUnavailable,
    NotFound,
    PermissionDenied,
)

UNAVAILABLE_HINT = (
    "start it: `virtlogd -d && libvirtd -d` (as root) or `sudo systemctl start libvirtd`; "
    "check you may use qemu:///system (group libvirt)"
)
PERMISSION_HINT = (
    "join the libvirt group (`sudo usermod -aG libvirt $USER`, then log in again) "
    "or point agentbox at qemu:///session"
)

_DENIED = frozenset(
    {
        libvirt.VIR_ERR_OPERATION_DENIED,
        libvirt.VIR_ERR_AUTH_FAILED,
        libvirt.VIR_ERR_AUTH_CANCELLED,
        libvirt.VIR_ERR_AUTH_UNAVAILABLE,
        libvirt.VIR_ERR_ACCESS_DENIED,
    }
)
_NO_CONNECTION = frozenset({libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_ERR_RPC})
# Socket/transport failures show up as generic system or internal errors from these.
_TRANSPORT_DOMAINS = frozenset({libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE})


NO_SPACE_HINT = ("the file system of agentbox's storage dir is full (agentbox doctor shows its free space): "
                 "free some space there, then try again")


def translate(err: libvirt.libvirtError, *, action: str, connecting: bool = False) -> AgentboxError:
    """The AgentboxError for `err`, raised while doing `action` (e.g. "start domain 'x'").

    `connecting` marks errors from opening the connection: whatever went wrong there
    (missing socket, unknown URI, bad test-driver file) means the backend is unavailable.
    """
    code = err.get_error_code()
    domain = err.get_error_domain()
    detail = err.get_error_message() or str(err)
    message = f"{action}: {detail}"
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return NotFound(message)
    if code == libvirt.VIR_ERR_DOM_EXIST:
        return AlreadyExists(message)
    if code in _DENIED or (code == libvirt.VIR_ERR_SYSTEM_ERROR and "Permission denied" in detail):
        return PermissionDenied(message, hint=PERMISSION_HINT)
    transport = domain in _TRANSPORT_DOMAINS and code in (
        libvirt.VIR_ERR_SYSTEM_ERROR,
        libvirt.VIR_ERR_INTERNAL_ERROR,
    )
    if connecting or code in _NO_CONNECTION or transport:
        return BackendUnavailable(message, hint=UNAVAILABLE_HINT)
    if "No space left on device" in detail:  # QEMU writing a snapshot or a disk into a full storage dir
        return BackendError(message, hint=NO_SPACE_HINT)
    return BackendError(message)
