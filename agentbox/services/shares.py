"""Shares and the outbox of a workspace: kept in its policy (shares.json), attached live to
the running VM, re-attached after every start and reset, and mounted by the guest at
/mnt/shares/TAG (read-only there too, for clarity; the boundary is on the host) and
/mnt/outbox. Nothing here is ever part of a snapshot: vhost-user-fs cannot be saved with
the RAM, and a share belongs to the host's present, not to the clean state.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from agentbox.backends.base import DiskSpec, DomainState, FilesystemSpec
from agentbox.config.atomic_file import write_atomically
from agentbox.errors import AgentboxError, GuestError, InvalidInput, NotFound, PermissionDenied
from agentbox.model.guest import GUEST_GID, GUEST_UID
from agentbox.model.secret_rules import SecretScan
from agentbox.model.shares import (AddedShare, MechanismChoice, NotReadable, ReadOnlyProof, SecretChoice, Share,
                                   ShareMechanism, not_readable_hint, rank_mechanisms)
from agentbox.host import bind_mounts
from agentbox.host.secret_scan import scan_folder
from agentbox.host.share_content import scan_live
from agentbox.services.context import ServiceContext
from agentbox.host.locks import workspace_lock
from agentbox.services.lookup import load_ready_record
from agentbox.stores.records import WorkspaceRecord
from agentbox.services.outbox_limit import OutboxLimit
from agentbox.services.share_checks import (ShareCheck, ShareChecks, gate_secrets, parse_proofs, proof_script,
                                            secret_choice)
from agentbox.services.share_paths import OUTBOX_TAG, default_tag, validate_share_source, validate_tag
from agentbox.services.ssh_access import ssh_target

GUEST_SHARES = "/mnt/shares"
GUEST_OUTBOX = "/mnt/outbox"


@dataclass(frozen=True)
class ShareStatus:
    share: Share
    attached: bool  # live in the running VM right now
    live: bool  # host changes show in the guest (else a point-in-time copy)
    proof: ReadOnlyProof | None = None  # the last read-only proof from inside the guest
    new_secrets: tuple[str, ...] = ()  # found by a re-scan at a later attach ("path (rule)")


class ShareService:
    def __init__(self, *, ctx: ServiceContext) -> None:
        self._ctx = ctx

    # -- what this host can do ------------------------------------------------------------

    def mechanisms(self, *, domain: str = "") -> tuple[MechanismChoice, ...]:
        """What this host offers a workspace's VM `domain` (or a new workspace's)."""
        backend = self._ctx.backend
        caps = backend.capabilities_of(name=domain) if domain else backend.capabilities
        facts = bind_mounts.probe_facts(libvirt_version=caps.libvirt_version,
                                       local=not urlsplit(caps.uri).netloc, guest_9p=False, virtiofs=caps.virtiofs)
        return rank_mechanisms(facts=facts)

    def _choose(self, requested: str | None, *, domain: str) -> ShareMechanism:
        choices = self.mechanisms(domain=domain)
        if requested:
            try:
                wanted = ShareMechanism(requested)
            except ValueError:
                names = ", ".join(m.value for m in ShareMechanism)
                raise InvalidInput(f"unknown share mechanism {requested!r}", hint=f"one of: {names}") from None
            [choice] = [c for c in choices if c.mechanism is wanted]
            if not choice.available:
                raise InvalidInput(f"{wanted.value} cannot be used here: {choice.reason}")
            return wanted
        for choice in choices:
            if choice.available:
                return choice.mechanism
        reasons = "; ".join(f"{c.mechanism.value}: {c.reason}" for c in choices)
        raise AgentboxError(f"no way to share a folder read-only on this host ({reasons})",
                            hint="agentbox never shares writable; agentbox doctor says what to install")

    # -- the policy ------------------------------------------------------------------------

    def list(self, *, name: str) -> tuple[ShareStatus, ...]:
        record = load_ready_record(ctx=self._ctx, name=name)
        tags, serials = self._attached(record)
        checks = self._checks(name).load()
        return tuple(ShareStatus(share=s, live=s.mechanism.live,
                                 attached=(s.tag in tags) if s.mechanism is not ShareMechanism.COPY_DISK
                                 else _serial(s.tag) in serials,
                                 proof=checks[s.tag].proof if s.tag in checks else None,
                                 new_secrets=checks[s.tag].new_secrets if s.tag in checks else ())
                     for s in self._load(name))

    def scan(self, *, source: str, allow_system_folder: bool = False) -> SecretScan:
        """What `share add` would find in `source` (for a caller that lets the user choose first)."""
        return scan_folder(source=self.check_source(source=source, allow_system_folder=allow_system_folder))

    def add(self, *, name: str, source: str, tag: str | None = None, mechanism: str | None = None,
            allow_system_folder: bool = False, secrets: str | SecretChoice | None = None) -> AddedShare:
        """Share `source` read-only; a system folder (share_paths.SYSTEM_DIRS) only with
        `allow_system_folder`, a credential folder never. The folder is scanned for likely
        secrets first: with findings it is shared only with `secrets` chosen (EXCLUDE: as a copy
        without those files; ALLOW: as it is), else SecretsFound. The result says what of it the
        guest's user cannot read (a copy leaves that out; a live share shows it unreadable)."""
        with workspace_lock(paths=self._ctx.paths, name=name):
            return self.add_locked(record=load_ready_record(ctx=self._ctx, name=name), source=source, tag=tag,
                                   mechanism=mechanism, allow_system_folder=allow_system_folder, secrets=secrets)

    def add_locked(self, *, record: WorkspaceRecord, source: str, tag: str | None = None,
                   mechanism: str | None = None, allow_system_folder: bool = False,
                   secrets: str | SecretChoice | None = None) -> AddedShare:
        """add() for callers that hold the workspace lock (create)."""
        name = record.name
        if record.inspection:  # a guest that made someone press panic gets no host folder
            raise InvalidInput(f"{name!r} holds restored evidence ({record.inspection}): no folder is shared into it",
                               hint="copy what you need out through its outbox, or share into a new workspace")
        choice = secret_choice(secrets)
        path = self.check_source(source=source, allow_system_folder=allow_system_folder)
        scan = scan_folder(source=path)
        gate_secrets(source=path, scan=scan, choice=choice)
        excluded = scan.paths if choice is SecretChoice.EXCLUDE else ()
        if excluded:  # a live view cannot hide files: the guest gets a copy without them
            if mechanism and mechanism != ShareMechanism.COPY_DISK.value:
                raise InvalidInput(f"{mechanism} is live and cannot leave files out",
                                   hint="leave out --mechanism: excluded files mean a copy-disk share")
            mechanism = ShareMechanism.COPY_DISK.value
        share = replace(self._new_share(record=record, source=source, tag=tag, mechanism=mechanism,
                                        allow_system_folder=allow_system_folder),
                        excluded=excluded, secrets=tuple(f.render() for f in scan.findings))
        # Whether the guest sees every entry readable whatever its host owner and mode: a copy
        # is made so, a read-only bind through bindfs; the others show the host's modes.
        mapped = (share.mechanism is ShareMechanism.COPY_DISK
                  or share.mechanism is ShareMechanism.VIRTIOFS_RO_BIND and bool(bind_mounts.find_bindfs()))
        not_readable = NotReadable()
        try:
            if share.mechanism is ShareMechanism.COPY_DISK:
                not_readable = bind_mounts.make_copy_disk(
                    source=Path(share.source), image=self._copy_image(record, share.tag), label=share.tag,
                    owner=(GUEST_UID, GUEST_GID), exclude=frozenset(share.excluded))
            self._save(name, (*self._load(name), share))
            if self._running(record):
                output = self._guest(record, self._attach(record, share) + " && " + self._proof(share))
                self.record_proofs(record=record, output=output)
                proof = self._checks(name).load().get(share.tag)
                if proof is None or proof.proof is None or not proof.proof.refused:
                    raise PermissionDenied(f"the guest could write to {share.source} through {share.mechanism.value}"
                                           " (or the read-only proof gave no answer): not sharing it",
                                           hint="agentbox doctor; report this: it is a bug in agentbox")
            if share.mechanism is not ShareMechanism.COPY_DISK:
                # Live: what the guest's user will meet, looked at once now (it may change).
                not_readable = scan_live(source=Path(share.source), mapped=mapped,
                                         guest_uid=GUEST_UID, guest_gid=GUEST_GID)
        except BaseException:
            if self._running(record):
                self._detach(record, share)
            self._checks(name).drop(tag=share.tag)
            self._save(name, tuple(s for s in self._load(name) if s.tag != share.tag))
            self._release_host(record, share)
            self._copy_image(record, share.tag).unlink(missing_ok=True)
            raise
        self._ctx.audit(name=name).append(event="share.added", details={
            **asdict(share), "live": share.mechanism.live, "not_readable": not_readable.count,
            "secrets_choice": choice.value if choice else None})
        return AddedShare(share=share, not_readable=not_readable,
                          hint=not_readable_hint(mechanism=share.mechanism, mapped=mapped)
                          if not_readable.count else "")

    def check_source(self, *, source: str, allow_system_folder: bool = False) -> Path:
        """The folder `source` resolved, or InvalidInput saying why it may not be shared."""
        ctx = self._ctx
        return validate_share_source(source=source, home=Path.home(),
                                     own_dirs=(*ctx.paths.own_dirs(), ctx.settings.storage_dir),
                                     allow_system_folder=allow_system_folder)

    def _new_share(self, *, record: WorkspaceRecord, source: str, tag: str | None, mechanism: str | None,
                   allow_system_folder: bool) -> Share:
        path = self.check_source(source=source, allow_system_folder=allow_system_folder)
        tag = validate_tag(tag or default_tag(path))
        if any(s.tag == tag for s in self._load(record.name)):
            raise InvalidInput(f"workspace {record.name!r} already has a share {tag!r}",
                               hint=f"pick another --tag, or agentbox share rm {record.name} {tag}")
        return Share(tag=tag, source=str(path), mechanism=self._choose(mechanism, domain=record.domain),
                     added=self._ctx.clock().isoformat(timespec="seconds"))

    def remove(self, *, name: str, tag: str) -> Share:
        ctx = self._ctx
        with workspace_lock(paths=ctx.paths, name=name):
            record = load_ready_record(ctx=ctx, name=name)
            shares = self._load(name)
            found = [s for s in shares if s.tag == tag]
            if not found:
                raise NotFound(f"workspace {name!r} has no share {tag!r}", hint=f"agentbox share list {name}")
            if self._running(record):
                self._detach(record, found[0])
            self._release_host(record, found[0])
            if found[0].mechanism is ShareMechanism.COPY_DISK:
                self._copy_image(record, tag).unlink(missing_ok=True)
            self._save(name, tuple(s for s in shares if s.tag != tag))
            self._checks(name).drop(tag=tag)
            ctx.audit(name=name).append(event="share.removed", details=asdict(found[0]))
            return found[0]

    # -- following the VM's life -------------------------------------------------------------

    def attach_all(self, *, record: WorkspaceRecord, then: str = "") -> None:
        """After boot: the outbox and every share, mounted in the guest; `then`, a root shell
        command of the caller's (the gateway token's install), in the same SSH round trip."""
        script = " && ".join(part for part in (self.attach_devices(record=record), then) if part)
        if script:
            self.record_proofs(record=record, output=self._guest(record, script))

    def attach_devices(self, *, record: WorkspaceRecord) -> str:
        """Plug the outbox and every share into the VM; returns the guest's mount script,
        which also proves each share read-only (for a caller that has a guest command to run
        anyway: one SSH round trip less; it hands the command's stderr to `record_proofs`).
        Live shares are scanned for secrets again: new findings are audited and listed."""
        shares = self._load(record.name)
        for share in shares:
            if share.mechanism.live:
                self._rescan(record, share)
        scripts = ([self._attach_outbox(record)] + [self._attach(record, s) for s in shares]
                   + [self._proof(s) for s in shares])
        return " && ".join(script for script in scripts if script)

    def record_proofs(self, *, record: WorkspaceRecord, output: bytes) -> None:
        """Keep the read-only proofs the guest reported on stderr; a share the guest could
        write to is unplugged at once (fail closed) and audited."""
        when = self._ctx.clock().isoformat(timespec="seconds")
        checks, audit = self._checks(record.name), self._ctx.audit(name=record.name)
        for tag, proof in parse_proofs(output=output, when=when).items():
            checks.update(tag=tag, proof=proof)
            audit.append(event="share.ro_proof", details={"tag": tag, **asdict(proof)})
            if not proof.refused:
                for share in self._load(record.name):
                    if share.tag == tag:
                        self._detach(record, share)

    def _rescan(self, record: WorkspaceRecord, share: Share) -> None:
        found = tuple(f.render() for f in scan_folder(source=Path(share.source)).findings)
        new = tuple(item for item in found if item not in share.secrets)
        checks = self._checks(record.name)
        if new != checks.load().get(share.tag, ShareCheck()).new_secrets:
            checks.update(tag=share.tag, new_secrets=new)
            if new:
                self._ctx.audit(name=record.name).append(event="share.new_secrets", details={
                    "tag": share.tag, "source": share.source, "found": list(new)})

    def _proof(self, share: Share) -> str:
        return proof_script(tag=share.tag, guest_dir=f"{GUEST_SHARES}/{share.tag}")

    def release_all(self, *, record: WorkspaceRecord, remove_outbox: bool = False) -> None:
        """After the VM stopped (or before destroy): host-side mounts go."""
        for share in self._load(record.name):
            self._release_host(record, share)
        if remove_outbox:
            OutboxLimit(ctx=self._ctx).remove(storage=record.storage)

    @contextmanager
    def detached_for_snapshot(self, *, record: WorkspaceRecord) -> Iterator[None]:
        """A RAM snapshot cannot hold virtiofs devices: unmount and unplug them around it."""
        running = self._running(record)
        if running:
            for share in self._load(record.name):
                self._detach(record, share)
            self._detach_outbox(record)
        try:
            yield
        finally:
            if running:
                self.attach_all(record=record)

    # -- the outbox ---------------------------------------------------------------------

    def outbox_dir(self, record: WorkspaceRecord) -> Path:
        return record.storage.outbox

    def _attach_outbox(self, record: WorkspaceRecord) -> str:
        virtiofsd = bind_mounts.find_virtiofsd()
        caps = self._ctx.backend.capabilities_of(name=record.domain)
        if not virtiofsd or not caps.hotplug or not caps.virtiofs:
            return ""  # no virtiofs here: the workspace has no outbox (doctor says why)
        if not OutboxLimit(ctx=self._ctx).ready_for_guest(record=record):
            return ""  # no size limit can be enforced here: no outbox (`agentbox outbox NAME` says why)
        self._ctx.backend.attach_filesystem(name=record.domain, fs=FilesystemSpec(
            tag=OUTBOX_TAG, source=self.outbox_dir(record), driver="virtiofs", readonly=False, virtiofsd=virtiofsd))
        return f"mkdir -p {GUEST_OUTBOX} && " + _retry_mount(
            f"mount -t virtiofs -o nodev,nosuid {OUTBOX_TAG} {GUEST_OUTBOX}")

    def _detach_outbox(self, record: WorkspaceRecord) -> None:
        tags, _ = self._attached(record)
        if OUTBOX_TAG in tags:
            self._guest(record, f"umount -l {GUEST_OUTBOX} || true")
            self._ctx.backend.detach_filesystem(name=record.domain, tag=OUTBOX_TAG)

    # -- one share ----------------------------------------------------------------------

    def _attach(self, record: WorkspaceRecord, share: Share) -> str:
        """Plug one share in; returns the guest's mount command for it."""
        backend, guest_dir = self._ctx.backend, shlex.quote(f"{GUEST_SHARES}/{share.tag}")
        if share.mechanism is ShareMechanism.COPY_DISK:
            serial = _serial(share.tag)
            backend.attach_disk(name=record.domain, disk=DiskSpec(path=self._copy_image(record, share.tag),
                                                                  format="raw", readonly=True, serial=serial))
            device = f"/dev/disk/by-id/virtio-{serial}"
            return f"mkdir -p {guest_dir} && " + _retry_mount(f"mount -o ro,noload,nodev,nosuid {device} {guest_dir}")
        source = Path(share.source)
        if share.mechanism is ShareMechanism.VIRTIOFS_RO_BIND:
            source = self._bind_point(record, share.tag)
            bind_mounts.mount_readonly_bind(source=Path(share.source), mountpoint=source,
                                            readable_as=(GUEST_UID, GUEST_GID))
        virtiofsd = bind_mounts.find_virtiofsd()
        backend.attach_filesystem(name=record.domain, fs=FilesystemSpec(
            tag=share.tag, source=source, driver="9p" if share.mechanism is ShareMechanism.NINEP_READONLY
            else "virtiofs", readonly=share.mechanism is not ShareMechanism.VIRTIOFS_RO_BIND, virtiofsd=virtiofsd))
        fstype = "9p -o trans=virtio,version=9p2000.L," if share.mechanism is ShareMechanism.NINEP_READONLY \
            else "virtiofs -o "
        return f"mkdir -p {guest_dir} && " + _retry_mount(f"mount -t {fstype}ro,nodev,nosuid {share.tag} {guest_dir}")

    def _detach(self, record: WorkspaceRecord, share: Share) -> None:
        tags, serials = self._attached(record)
        try:
            self._guest(record, f"umount -l {shlex.quote(f'{GUEST_SHARES}/{share.tag}')} || true")
        except GuestError:
            pass  # an unreachable guest must not keep a share attached
        if share.mechanism is ShareMechanism.COPY_DISK:
            if _serial(share.tag) in serials:
                self._ctx.backend.detach_disk(name=record.domain, serial=_serial(share.tag))
        elif share.tag in tags:
            self._ctx.backend.detach_filesystem(name=record.domain, tag=share.tag)

    def _release_host(self, record: WorkspaceRecord, share: Share) -> None:
        if share.mechanism is ShareMechanism.VIRTIOFS_RO_BIND:
            bind_mounts.unmount(self._bind_point(record, share.tag))

    # -- helpers ------------------------------------------------------------------------

    def _guest(self, record: WorkspaceRecord, script: str) -> bytes:
        """Run `script` as root in the guest; returns its stderr (the read-only proofs)."""
        err = bytearray()
        code = self._ctx.guest.run_command(target=ssh_target(record=record, files=self._ctx.records.files(
            name=record.name)), argv=["sudo", "-n", "sh", "-c", script], stdout=lambda _: None,
            stderr=err.extend, timeout_s=60)
        if code != 0:
            raise GuestError(f"the guest of {record.name} could not mount its outbox and shares: "
                             f"{err.decode(errors='replace').strip()[-300:]}",
                             hint="the shares are attached on the host; mount them by hand or reset")
        return bytes(err)

    def _attached(self, record: WorkspaceRecord) -> tuple[frozenset[str], frozenset[str]]:
        if not self._running(record):
            return frozenset(), frozenset()
        return self._ctx.backend.attached(name=record.domain)

    def is_running(self, record: WorkspaceRecord) -> bool:
        return self._running(record)

    def _running(self, record: WorkspaceRecord) -> bool:
        info = self._ctx.backend.get(name=record.domain)
        return info is not None and info.state is DomainState.RUNNING

    def _bind_point(self, record: WorkspaceRecord, tag: str) -> Path:
        return record.storage.share_mountpoint(tag)

    def _copy_image(self, record: WorkspaceRecord, tag: str) -> Path:
        return record.storage.share_image(tag)

    def _checks(self, name: str) -> ShareChecks:
        return ShareChecks(files=self._ctx.records.files(name=name))

    def _load(self, name: str) -> tuple[Share, ...]:
        path = self._ctx.records.files(name=name).shares
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return ()
        except (OSError, ValueError) as exc:
            raise AgentboxError(f"{path}: unreadable share list ({exc})") from None
        return tuple(Share(**{**item, "mechanism": ShareMechanism(item["mechanism"]),
                              "excluded": tuple(item.get("excluded", ())), "secrets": tuple(item.get("secrets", ()))})
                     for item in raw)

    def _save(self, name: str, shares: tuple[Share, ...]) -> None:
        path = self._ctx.records.files(name=name).shares
        write_atomically(path=path, data=(json.dumps([asdict(s) for s in shares], indent=2) + "\n").encode())


def _serial(tag: str) -> str:
    # virtio-blk serials hold at most 20 bytes; tags are up to 63.
    return "abshare-" + hashlib.sha256(tag.encode()).hexdigest()[:12]


def _retry_mount(command: str) -> str:
    # A hot-plugged device takes a moment to appear in the guest (a few tenths of a second
    # under TCG, which every create and reset waits out: polled finely). A subshell, so that
    # several mounts chain in one script.
    return f"(for i in $(seq 200); do {command} 2>/dev/null && exit 0; sleep 0.05; done; {command})"
