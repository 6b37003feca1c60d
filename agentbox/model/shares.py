"""Shares: host folders a guest may read and never change, and how that is enforced.

Read-only is enforced outside the guest, by the best mechanism the host offers (DESIGN.md
section 4). A guest-side `mount -o ro` is never the boundary. If no mechanism applies,
sharing is refused: there is no writable fallback.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

LIBVIRT_VIRTIOFS_READONLY = 11_000_000  # libvirt 11.0 knows <filesystem><readonly/> for virtiofs


class ShareMechanism(StrEnum):
    VIRTIOFS_READONLY = "virtiofs-readonly"  # virtiofsd --readonly, asked for by libvirt
    VIRTIOFS_RO_BIND = "virtiofs-ro-bind"  # virtiofs over a read-only bind mount on the host
    NINEP_READONLY = "9p-readonly"  # QEMU enforces 9p's <readonly/>
    COPY_DISK = "copy-disk"  # a point-in-time copy on a read-only disk

    @property
    def live(self) -> bool:
        """True when changes on the host show in the guest; a copy is frozen when made."""
        return self is not ShareMechanism.COPY_DISK

    @property
    def virtiofs(self) -> bool:
        return self in (ShareMechanism.VIRTIOFS_READONLY, ShareMechanism.VIRTIOFS_RO_BIND)


PREFERENCE = (ShareMechanism.VIRTIOFS_READONLY, ShareMechanism.VIRTIOFS_RO_BIND,
              ShareMechanism.NINEP_READONLY, ShareMechanism.COPY_DISK)


@dataclass(frozen=True)
class HostFacts:
    """What the probe found on this host, for the decision below."""

    libvirt_version: int  # e.g. 9000000 for 9.0.0
    virtiofsd: str  # its path, "" if none was found
    virtiofsd_readonly: bool  # it has a read-only option
    privileged: bool  # may make bind mounts (root)
    local: bool  # the hypervisor runs on this host (bind mounts and copies are made here)
    guest_9p: bool  # the template's guest kernel can mount 9p
    mkfs_ext4: bool  # a copy disk can be made


@dataclass(frozen=True)
class MechanismChoice:
    mechanism: ShareMechanism
    available: bool
    reason: str  # why it can or cannot be used here


def rank_mechanisms(*, facts: HostFacts) -> tuple[MechanismChoice, ...]:
    """Every mechanism in order of preference, each with whether it works here and why."""
    virtiofs_note = "no virtiofsd found" if not facts.virtiofsd else ""
    choices = [
        _choice(ShareMechanism.VIRTIOFS_READONLY,
                virtiofs_note or ("libvirt < 11 cannot ask virtiofsd for read-only"
                                  if facts.libvirt_version < LIBVIRT_VIRTIOFS_READONLY else "")
                or ("this virtiofsd has no read-only option" if not facts.virtiofsd_readonly else ""),
                "virtiofsd itself refuses writes (live)"),
        _choice(ShareMechanism.VIRTIOFS_RO_BIND,
                virtiofs_note or ("needs root to make a read-only bind mount" if not facts.privileged else "")
                or ("the hypervisor is remote" if not facts.local else ""),
                "the host kernel refuses writes to a read-only bind mount (live)"),
        _choice(ShareMechanism.NINEP_READONLY,
                "" if facts.guest_9p else "the guest kernel has no 9p",
                "QEMU refuses writes to a read-only 9p export (live)"),
        _choice(ShareMechanism.COPY_DISK,
                ("mkfs.ext4 (e2fsprogs) is not installed" if not facts.mkfs_ext4 else "")
                or ("the hypervisor is remote" if not facts.local else ""),
                "a copy made now, on a disk QEMU attaches read-only (not live)"),
    ]
    return tuple(choices)


def _choice(mechanism: ShareMechanism, problem: str, works: str) -> MechanismChoice:
    return MechanismChoice(mechanism=mechanism, available=not problem, reason=problem or works)


@dataclass(frozen=True)
class Share:
    tag: str  # the name in the guest: /mnt/shares/TAG
    source: str  # the resolved host folder
    mechanism: ShareMechanism
    added: str  # ISO 8601 UTC
