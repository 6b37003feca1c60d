"""Moving a domain's guest SSH forward to another host port, live: what lets a standby copy
(services/standby.py) take over a workspace's port at a reset, so every SSH client (and the
egress forward) keeps its 127.0.0.1:PORT.

The forward is QEMU's user-net `hostfwd` (domain_xml.py puts it on the command line); a live
one is changed only through QEMU's human monitor (`hostfwd_remove` / `hostfwd_add`: QMP has
no command for it). The persistent definition and the one saved in each snapshot are
rewritten too, for the domain's next boot and its next revert.
"""

from __future__ import annotations

import libvirt
import libvirt_qemu

from agentbox.backends.libvirt.domain_xml import NETDEV_ID, with_ssh_port
from agentbox.backends.libvirt.errors import translate
from agentbox.errors import BackendError


def drop(domain: libvirt.virDomain, *, port: int) -> None:
    # Its one reply: "host forwarding rule for tcp:… removed" (or "… not found").
    reply = _monitor(domain, f"hostfwd_remove {NETDEV_ID} tcp:127.0.0.1:{port}")
    if not reply.endswith("removed"):
        raise BackendError(f"QEMU kept the SSH forward of {domain.name()!r} on port {port}: {reply}")


def move(domain: libvirt.virDomain, *, old_port: int, new_port: int) -> None:
    drop(domain, port=old_port)
    # Silent on success; an error is said as text ("could not set up host forwarding rule …").
    if reply := _monitor(domain, f"hostfwd_add {NETDEV_ID} tcp:127.0.0.1:{new_port}-:22"):
        raise BackendError(f"QEMU refused port {new_port} for the SSH forward of {domain.name()!r}: {reply}")
    try:
        inactive = domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
        domain.connect().defineXML(with_ssh_port(inactive, port=new_port))
        # A revert starts QEMU from the definition saved in the snapshot, not the current
        # one: each snapshot's copy of it gets the port too (metadata only).
        for snapshot in domain.listAllSnapshots(0):
            saved = snapshot.getXMLDesc(libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE)
            domain.snapshotCreateXML(with_ssh_port(saved, port=new_port), libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE)
    except libvirt.libvirtError as err:
        raise translate(err, action=f"keep port {new_port} in the definition of {domain.name()!r}") from None


def _monitor(domain: libvirt.virDomain, command: str) -> str:
    """The human monitor's reply, stripped: it answers errors as text, not as an error."""
    try:
        reply = libvirt_qemu.qemuMonitorCommand(domain, command, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
    except libvirt.libvirtError as err:
        raise translate(err, action=f"{command.split()[0]} on {domain.name()!r}") from None
    return str(reply).strip()
