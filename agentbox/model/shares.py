"""Shares: host folders a guest may read and never change, and how that is enforced.

Read-only is enforced outside the guest, by the best mechanism the host offers (DESIGN.md
section 4). A guest-side `mount -o ro` is never the boundary. If no mechanism applies,
sharing is refused: there is no writable fallback.
"""

from __future__ import annotations

import stat
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
    bindfs: bool = False  # a live share can show every file as readable by the guest's user


@dataclass(frozen=True)
class MechanismChoice:
    mechanism: ShareMechanism
    available: bool
    reason: str  # why it can or cannot be used here


REMOTE_VIRTIOFS = ("the folder is on this machine and the VM on a remote libvirt host: a virtiofsd there"
                   " cannot reach it (use copy-disk)")


def rank_mechanisms(*, facts: HostFacts) -> tuple[MechanismChoice, ...]:
    """Every mechanism in order of preference, each with whether it works here and why."""
    virtiofs_note = ((REMOTE_VIRTIOFS if not facts.local else "")
                     or ("no virtiofsd found" if not facts.virtiofsd else ""))
    choices = [
        _choice(ShareMechanism.VIRTIOFS_READONLY,
                virtiofs_note or ("libvirt < 11 cannot ask virtiofsd for read-only"
                                  if facts.libvirt_version < LIBVIRT_VIRTIOFS_READONLY else "")
                or ("this virtiofsd has no read-only option" if not facts.virtiofsd_readonly else ""),
                "virtiofsd itself refuses writes (live)"),
        _choice(ShareMechanism.VIRTIOFS_RO_BIND,
                virtiofs_note or ("needs root to make a read-only bind mount" if not facts.privileged else ""),
                "the host kernel refuses writes to a read-only mount (live)"
                + (", every file shown readable to the guest's user (bindfs)" if facts.bindfs else
                   "; without bindfs the guest's user can read only what the host's modes let uid 1000 read")),
        _choice(ShareMechanism.NINEP_READONLY,
                "" if facts.guest_9p else "the guest kernel has no 9p",
                "QEMU refuses writes to a read-only 9p export (live)"),
        _choice(ShareMechanism.COPY_DISK,
                "mkfs.ext4 (e2fsprogs) is not installed" if not facts.mkfs_ext4 else "",
                "a copy made now, on a disk QEMU attaches read-only (not live)"
                + ("; uploaded to the remote host" if not facts.local else "")),
    ]
    return tuple(choices)


def _choice(mechanism: ShareMechanism, problem: str, works: str) -> MechanismChoice:
    return MechanismChoice(mechanism=mechanism, available=not problem, reason=problem or works)


class SecretChoice(StrEnum):
    """What to do with the likely secrets a folder's scan found (agentbox.model.secret_rules)."""

    EXCLUDE = "exclude"  # share the folder without those files (as a copy: a live view cannot hide files)
    ALLOW = "allow"  # share them anyway, on the user's explicit word


@dataclass(frozen=True)
class Share:
    tag: str  # the name in the guest: /mnt/shares/TAG
    source: str  # the resolved host folder
    mechanism: ShareMechanism
    added: str  # ISO 8601 UTC
    excluded: tuple[str, ...] = ()  # files left out of the guest's view (paths inside the folder)
    secrets: tuple[str, ...] = ()  # the scan's findings when it was added ("path (rule)"), excluded or allowed


@dataclass(frozen=True)
class ReadOnlyProof:
    """A write tried from inside the guest, as root, after the share was attached (the guest's
    mount remounted read-write first, so only the host's boundary can refuse it)."""

    time: str  # ISO 8601 UTC
    refused: bool  # True: the write failed, as it must
    detail: str  # the guest's own words (the error the write met)


@dataclass(frozen=True)
class NotReadable:
    """What of a shared folder the guest's user cannot read, as found when it was shared."""

    count: int = 0
    examples: tuple[tuple[str, str], ...] = ()  # (path inside the folder, why), the first few

    def summary(self) -> str:
        """One line for the user, "" when everything is readable."""
        if not self.count:
            return ""
        shown = "; ".join(f"{path}: {why}" for path, why in self.examples)
        more = f"; and {self.count - len(self.examples)} more" if self.count > len(self.examples) else ""
        return f"{self.count} item(s) cannot be read in the guest ({shown}{more})"


@dataclass(frozen=True)
class AddedShare:
    share: Share
    not_readable: NotReadable
    hint: str  # what to do about not_readable, "" when it is empty


EXAMPLES_KEPT = 5
SPECIAL = "a socket, FIFO or device: not shared"


class NotReadableTally:
    """Counts what cannot be read while a folder is walked, keeping the first few examples."""

    def __init__(self) -> None:
        self._count = 0
        self._examples: list[tuple[str, str]] = []

    def add(self, *, path: str, why: str) -> None:
        self._count += 1
        if len(self._examples) < EXAMPLES_KEPT:
            self._examples.append((path, why))

    def result(self) -> NotReadable:
        return NotReadable(count=self._count, examples=tuple(self._examples))


def is_special(mode: int) -> bool:
    """Sockets, FIFOs and device nodes: nothing a guest could read as content."""
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode))


def guest_may_read(*, mode: int, uid: int, gid: int, guest_uid: int, guest_gid: int) -> bool:
    """Whether the guest's user may read (and, for a folder, enter) an entry shown with the
    host's owner and mode unchanged: the guest kernel checks them as it would its own."""
    if stat.S_ISLNK(mode):
        return True  # a link's own mode is never checked
    if uid == guest_uid:
        bits = (mode >> 6) & 0o7
    elif gid == guest_gid:
        bits = (mode >> 3) & 0o7
    else:
        bits = mode & 0o7
    needed = 0o5 if stat.S_ISDIR(mode) else 0o4
    return bits & needed == needed


def not_readable_hint(*, mechanism: ShareMechanism, mapped: bool) -> str:
    if mechanism is ShareMechanism.COPY_DISK:
        return ("those were left out of the copy: sockets, FIFOs and devices never go in, and a file "
                "agentbox itself cannot read does not either (run agentbox as root, or fix the modes, "
                "then share again)")
    if not mapped:
        return ("install bindfs (apt-get install bindfs) so that every file shows readable to the guest's "
                "user, then share again; or make them readable on the host")
    return "even root on the host cannot read those (another file system's rules?); sockets and FIFOs are never content"
