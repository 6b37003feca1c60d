"""Create a workspace: image → keys → disk → seed → domain → boot → SSH → cloud-init;
or, warm: image → golden state → keys → disk on the golden disk → seed → domain → restore the
golden RAM → the clone's own identity over SSH (provision/identity.py). Then the clean
snapshot, the forward, shares and done. The supervisor (with its proxy and gateway) starts
as soon as the domain is defined, its forward held down until after the clean snapshot, so
their start-up overlaps the boot or restore instead of following it.

Every step that leaves something behind registers its undo first; any failure (or
cancel, or Ctrl-C) runs the undo stack, so a failed create leaves nothing. A create killed
outright leaves a record in phase `creating`, which `list` shows as broken.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from agentbox.errors import AlreadyExists, BackendError, GuestError, HostKeyMismatch, InvalidInput
from agentbox.images.store import ImageInfo
from agentbox.model.budget import HostBudget
from agentbox.model.names import validate_workspace_name
from agentbox.model.network import NetworkMode, NetworkPolicy
from agentbox.model.remote_host import jump_host_of
from agentbox.model.workspace import BackendKind
from agentbox.model.progress import CancelToken, Progress, ProgressCallback
from agentbox.model.template import Resources, Template
from agentbox.provision import cloudinit, keys, seed
from agentbox.services.attachments import Attachments
from agentbox.services.anchoring import anchor_trail
from agentbox.services.context import ServiceContext
from agentbox.services.golden import GoldenState, GoldenStore, clone_spec, give_identity
from agentbox.services.guest_ready import wait_cloud_init, wait_for_guest
from agentbox.host.locks import workspace_lock
from agentbox.stores.records import Phase, WorkspaceRecord
from agentbox.services.network import NetworkService
from agentbox.services.outbox_limit import validate_limit_mib
from agentbox.services.share_paths import default_tag, parse_share_spec, validate_share_source, validate_tag
from agentbox.services.share_checks import gate_secrets, secret_choice
from agentbox.services.shares import ShareService
from agentbox.services.snapshots import SnapshotService
from agentbox.services.ssh_ports import free_ssh_port
from agentbox.services.standby import Standby
from agentbox.host.secret_scan import scan_folder
from agentbox.host.storage import copy_disk, remove_storage
from agentbox.services.ssh_access import ssh_target
from agentbox.remote.ssh import SshTarget
from agentbox.stores.ssh_config import write_workspace_ssh_files

STEPS = ("image", "keys", "disk", "seed", "define", "boot", "ssh", "cloud-init", "clean", "network", "shares",
         "done")
# A warm clone's steps: the golden state instead of boot, SSH and cloud-init.
WARM_STEPS = ("image", "golden", "keys", "disk", "seed", "define", "restore", "identity", "clean", "network",
              "shares", "done")


@dataclass(frozen=True)
class CreateRequest:
    name: str
    template: str | None = None
    vcpus: int | None = None
    memory_mib: int | None = None
    disk_gib: int | None = None
    network: str | None = None  # off | allowlist | open; default: the template's
    shares: tuple[str, ...] = ()  # "DIR[:TAG]", shared read-only
    allow_system_folder: bool = False  # lets `shares` name system folders (never credential ones)
    outbox_mib: int | None = None  # the outbox's size limit; default: the settings' outbox_limit_mib
    share_secrets: str | None = None  # exclude | allow: what to do with likely secrets in `shares`
    warm: bool | None = None  # restore a golden state instead of a cold boot; default: settings.warm_create
    # Per-session host budgets (services/budgets.py); None: the template's
    egress_bytes: int | None = None
    disk_write_bytes: int | None = None
    cpu_seconds: int | None = None
    standby: bool | None = None  # keep a paused clean copy for resets by swap; default: the template's


def _host_budget(*, ctx: ServiceContext, template: Template, request: CreateRequest) -> HostBudget:
    """The template's budgets with the request's in place of them; refused before anything is made."""
    old = template.host_budget
    new = HostBudget(
        egress_bytes=old.egress_bytes if request.egress_bytes is None else request.egress_bytes,
        disk_write_bytes=old.disk_write_bytes if request.disk_write_bytes is None else request.disk_write_bytes,
        cpu_seconds=old.cpu_seconds if request.cpu_seconds is None else request.cpu_seconds,
        on_exceeded=old.on_exceeded)
    if (new.disk_write_bytes or new.cpu_seconds) and not ctx.backend.capabilities.usage_stats:
        raise InvalidInput("this backend cannot measure disk writes or CPU time: no such budget can hold here",
                           hint="leave out the disk-write and CPU budgets (the egress budget works everywhere)")
    return new


class _Undo:
    def __init__(self) -> None:
        self._actions: list[Callable[[], None]] = []

    def push(self, action: Callable[[], None]) -> None:
        self._actions.append(action)

    def run(self) -> None:
        for action in reversed(self._actions):
            try:
                action()
            except Exception:  # noqa: BLE001 - undo continues; the original error is what the user sees
                pass


def resolve_resources(*, template: Template, request: CreateRequest) -> Resources:
    base = template.resources
    resources = Resources(
        vcpus=request.vcpus if request.vcpus is not None else base.vcpus,
        memory_mib=request.memory_mib if request.memory_mib is not None else base.memory_mib,
        disk_gib=request.disk_gib if request.disk_gib is not None else base.disk_gib,
    )
    for label, value, low, high in (("--cpus", resources.vcpus, 1, 64),
                                    ("--memory", resources.memory_mib, 256, 262144),
                                    ("--disk", resources.disk_gib, 4, 4096)):
        if not low <= value <= high:
            raise InvalidInput(f"{label} {value} is out of range {low}..{high}")
    return resources


def create_workspace(*, ctx: ServiceContext, request: CreateRequest,
                     on_progress: ProgressCallback, cancel: CancelToken) -> WorkspaceRecord:
    name = validate_workspace_name(request.name)
    template = ctx.catalogue.get(name=request.template or ctx.settings.default_template)
    resources = resolve_resources(template=template, request=request)
    policy = NetworkService.template_policy(template=template, mode=request.network)  # refuses bad modes early
    outbox_mib = validate_limit_mib(request.outbox_mib if request.outbox_mib is not None
                                    else ctx.settings.outbox_limit_mib, option="--outbox-mib")
    template = replace(template, host_budget=_host_budget(ctx=ctx, template=template, request=request))
    share_specs = [parse_share_spec(spec) for spec in request.shares]
    for source, tag in share_specs:  # refuse bad folders and tags before anything is made
        path = validate_share_source(source=source, home=Path.home(),
                                     own_dirs=(*ctx.paths.own_dirs(), ctx.settings.storage_dir),
                                     allow_system_folder=request.allow_system_folder)
        validate_tag(tag or default_tag(path))
        gate_secrets(source=path, scan=scan_folder(source=path), choice=secret_choice(request.share_secrets))
    with workspace_lock(paths=ctx.paths, name=name):
        _refuse_existing(ctx=ctx, name=name)
        report = _Reporter(on_progress)
        report.step("image", f"image for template {template.name}")
        image = ctx.images.ensure(template=template, on_progress=on_progress, cancel=cancel)
        warm = request.warm if request.warm is not None else ctx.settings.warm_create
        if warm:
            report.steps = WARM_STEPS
        golden = _golden(ctx=ctx, template=template, resources=resources, image=image, report=report,
                         cancel=cancel) if warm else None
        report.steps = WARM_STEPS if golden is not None else STEPS
        undo = _Undo()
        try:
            return _build(ctx=ctx, name=name, template=template, resources=resources, image=image, golden=golden,
                          outbox_mib=outbox_mib, policy=policy, share_specs=share_specs,
                          allow_system_folder=request.allow_system_folder, share_secrets=request.share_secrets,
                          report=report, cancel=cancel, undo=undo,
                          standby=template.policy.standby if request.standby is None else request.standby)
        except BaseException as exc:
            report.step("undo", f"create failed ({_short(exc)}); removing what it made")
            undo.run()
            raise


class CreateService:
    """Creating workspaces, as the CLI and the TUI's wizard ask for it."""

    def __init__(self, *, ctx: ServiceContext) -> None:
        self._ctx = ctx

    @property
    def default_template(self) -> str:
        return self._ctx.settings.default_template

    def resources(self, *, template: Template, request: CreateRequest) -> Resources:
        """What `request` would get from `template`; InvalidInput past the limits create enforces."""
        return resolve_resources(template=template, request=request)

    def create(self, *, request: CreateRequest, on_progress: ProgressCallback,
               cancel: CancelToken) -> WorkspaceRecord:
        return create_workspace(ctx=self._ctx, request=request, on_progress=on_progress, cancel=cancel)


def _golden(*, ctx: ServiceContext, template: Template, resources: Resources, image: ImageInfo,
            report: _Reporter, cancel: CancelToken) -> GoldenState | None:
    """The golden state to clone from (built on first use), or None: cold boot, and why."""
    caps = ctx.backend.capabilities
    if not (caps.memory_restore and caps.ram_snapshots):
        report.step("golden", "this backend cannot restore saved RAM into a new VM: cold boot instead")
        return None
    store = GoldenStore(ctx=ctx)
    report.step("golden", f"golden state for {template.name} ({resources.vcpus} vCPU, {resources.memory_mib} MiB)")
    try:
        return store.ensure(template=template, resources=resources, image=image, on_progress=report.forward,
                            cancel=cancel)
    except (BackendError, GuestError) as exc:
        report.step("golden", f"no golden state ({_short(exc)}): cold boot instead")
        return None


def _build(*, ctx: ServiceContext, name: str, template: Template, resources: Resources, image: ImageInfo,
           golden: GoldenState | None, outbox_mib: int, policy: NetworkPolicy,
           share_specs: list[tuple[str, str | None]], allow_system_folder: bool, share_secrets: str | None,
           report: _Reporter, cancel: CancelToken, undo: _Undo, disk_source: Path | None = None,
           inspection: str = "", standby: bool = False) -> WorkspaceRecord:
    files = ctx.records.files(name=name)
    storage = ctx.workspace_storage(name=name)
    domain = ctx.domain_name(name=name)
    host_key = keys.generate_ed25519(comment=f"agentbox-{name}-host")
    record = WorkspaceRecord(
        name=name, domain=domain, template=template.name, image_id=image.image_id,
        created=ctx.clock().isoformat(timespec="seconds"), ssh_port=free_ssh_port(ctx=ctx),
        resources=resources, storage_dir=str(storage), host_key_public=host_key.public_openssh,
        outbox_limit_mib=outbox_mib, budget_requests=template.budget.requests,
        budget_bytes=template.budget.bytes, budget_tokens=template.budget.tokens,
        budget_egress_bytes=template.host_budget.egress_bytes,
        budget_disk_write_bytes=template.host_budget.disk_write_bytes,
        budget_cpu_seconds=template.host_budget.cpu_seconds, budget_on_exceeded=template.host_budget.on_exceeded.value,
        golden_id=golden.golden_id if golden else "",
        backend=ctx.settings.backend.value,
        remote_uri=ctx.settings.libvirt_uri if _is_remote(ctx) else "",
        phase=Phase.CREATING, reset_after_session=template.policy.reset_after_session, inspection=inspection,
        standby=standby,
    )
    undo.push(lambda: ctx.records.remove(name=name))
    ctx.records.save(record=record)
    network = NetworkService(ctx=ctx)
    network.write_policy(name=name, policy=policy)
    audit = ctx.audit(name=name)
    audit.append(event="create.started", details={"template": template.name, "image": image.image_id})

    cancel.raise_if_cancelled()
    report.step("keys", "client key and guest host key")
    client_key = keys.generate_ed25519(comment=f"agentbox-{name}")
    keys.write_private_key(path=files.client_key, keypair=client_key)
    write_workspace_ssh_files(record=record, files=files)

    cancel.raise_if_cancelled()
    report.step("disk", f"a copy of {disk_source}" if disk_source else
                f"{resources.disk_gib} GiB overlay on {golden.golden_id if golden else image.image_id}")
    undo.push(lambda: remove_storage(storage=storage, delete_volume=_volume_deleter(ctx)))
    storage.mkdir(parents=True, exist_ok=True, mode=0o711)
    storage.chmod(0o711)  # QEMU's user must traverse; the files inside are its alone
    disk = record.storage.disk
    # On a remote host the disk is a volume there, not a file remove_storage would find.
    undo.push(lambda: ctx.backend.delete_volume(path=disk))
    if disk_source is not None:
        if _is_remote(ctx):
            raise InvalidInput("evidence is restored into a workspace on this machine only",
                               hint="set libvirt_uri to qemu:///system for the restore")
        copy_disk(source=disk_source, target=disk)
    elif golden is not None:
        ctx.backend.create_overlay(path=disk, backing=golden.disk, backing_format="qcow2",
                                   size_gib=resources.disk_gib)
    else:
        ctx.backend.create_overlay(path=disk, backing=image.disk, backing_format=image.disk_format,
                                   size_gib=resources.disk_gib)

    cancel.raise_if_cancelled()
    report.step("seed", "cloud-init seed (NoCloud)")
    user_data = cloudinit.build_user_data(spec=template.cloud_init, fragments_dir=ctx.fragments_dir,
                                          hostname=name, authorized_key=client_key.public_openssh,
                                          host_key=host_key)
    seed_path = record.storage.seed
    seed.write_seed_iso(path=seed_path, user_data=cloudinit.render_user_data(user_data=user_data),
                        meta_data=cloudinit.render_meta_data(instance_id=f"agentbox-{name}-{record.created}",
                                                             hostname=name))

    cancel.raise_if_cancelled()
    report.step("define", f"libvirt domain {domain}")
    ctx.backend.define(spec=clone_spec(ctx=ctx, name=domain, workspace=name, template=template.name,
                                       resources=resources, image=image, disk=disk, seed=seed_path,
                                       ssh_port=record.ssh_port, console_log=record.storage.console_log,
                                       created=record.created))
    undo.push(lambda: ctx.backend.undefine(name=domain))
    undo.push(lambda: ctx.backend.destroy(name=domain))
    target = ssh_target(record=record, files=files)
    attachments = Attachments(ctx=ctx)
    undo.push(lambda: attachments.after_power_off(record=record, remove_outbox=True))
    attachments.while_creating(record=record)

    cancel.raise_if_cancelled()
    if golden is not None:
        try:
            _restore_clone(ctx=ctx, record=record, golden=golden, client_key=client_key.public_openssh,
                           host_key=host_key, report=report, cancel=cancel)
        except HostKeyMismatch:
            raise  # someone else answers on the clone's port: fail closed, never fall back
        except (BackendError, GuestError) as exc:
            report.step("restore", f"the warm clone failed ({_short(exc)}): cold boot instead")
            ctx.backend.destroy(name=domain)
            ctx.backend.delete_volume(path=disk)
            ctx.backend.create_overlay(path=disk, backing=image.disk, backing_format=image.disk_format,
                                       size_gib=resources.disk_gib)
            record = replace(record, golden_id="")
            ctx.records.save(record=record)
            golden = None
            report.steps = STEPS
    if golden is None:
        _cold_boot(ctx=ctx, record=record, target=target, report=report, cancel=cancel)

    report.step("clean", "saving the clean state")
    # A clone's identity script flushed the guest and marked its clean state already.
    record = SnapshotService(ctx=ctx).take_clean(record=record, on_progress=report.forward,
                                                 flushed=golden is not None)
    record = Standby(ctx=ctx).keep_clean(record=record, on_progress=report.forward)
    # Only after the snapshot: a clean state must not hold a live forward (see attachments.py).
    report.step("network", f"the SSH forward (network {policy.mode.value}); outbox ({record.outbox_limit_mib} MiB)")
    attachments.after_boot(record=record)
    report.step("shares", f"{len(share_specs)} read-only share(s)")
    shares = ShareService(ctx=ctx)
    for source, tag in share_specs:
        added = shares.add_locked(record=record, source=source, tag=tag, allow_system_folder=allow_system_folder,
                                  secrets=share_secrets)
        if added.not_readable.count:
            report.step("shares", f"{added.share.tag}: {added.not_readable.summary()}; {added.hint}")
    record = replace(record, phase=Phase.READY)
    ctx.records.save(record=record)
    audit.append(event="created", details={"template": template.name, "image": image.image_id,
                                           "ssh_port": record.ssh_port, "vcpus": resources.vcpus,
                                           "memory_mib": resources.memory_mib, "disk_gib": resources.disk_gib,
                                           "outbox_mib": record.outbox_limit_mib,
                                           "clean_snapshot": record.clean_snapshot,
                                           "clean_fallback": record.clean_fallback,
                                           "network": policy.mode.value, "allowlist": list(policy.render())})
    anchor_trail(ctx=ctx, name=name, why="created")
    record = Standby(ctx=ctx).prepare(record=record, on_progress=report.forward)
    report.step("done", f"workspace {name} is ready: agentbox ssh {name}")
    return record


def create_from_disk(*, ctx: ServiceContext, name: str, template: Template, resources: Resources, disk: Path,
                     inspection: str, on_progress: ProgressCallback, cancel: CancelToken) -> WorkspaceRecord:
    """A workspace booted from a copy of `disk` (never `disk` itself), cold, with no shares and
    the network off; cloud-init sees a new instance id, so it gives the guest this workspace's
    host key and client key as on any first boot."""
    name = validate_workspace_name(name)
    policy = NetworkPolicy(mode=NetworkMode.OFF, allowlist=())
    with workspace_lock(paths=ctx.paths, name=name):
        _refuse_existing(ctx=ctx, name=name)
        report = _Reporter(on_progress)
        report.step("image", f"kernel and image of template {template.name}")
        image = ctx.images.ensure(template=template, on_progress=on_progress, cancel=cancel)
        undo = _Undo()
        try:
            return _build(ctx=ctx, name=name, template=template, resources=resources, image=image, golden=None,
                          outbox_mib=validate_limit_mib(ctx.settings.outbox_limit_mib, option="outbox_limit_mib"),
                          policy=policy, share_specs=[], allow_system_folder=False, share_secrets=None,
                          report=report, cancel=cancel, undo=undo, disk_source=disk, inspection=inspection)
        except BaseException as exc:
            report.step("undo", f"restore failed ({_short(exc)}); removing what it made")
            undo.run()
            raise


def _cold_boot(*, ctx: ServiceContext, record: WorkspaceRecord, target: SshTarget, report: _Reporter,
               cancel: CancelToken) -> None:
    report.step("boot", "starting the VM")
    ctx.backend.start(name=record.domain)
    report.step("ssh", f"waiting for SSH on 127.0.0.1:{record.ssh_port} (pinned host key)")
    wait_for_guest(ctx=ctx, record=record, target=target, on_progress=report.forward, cancel=cancel)
    report.step("cloud-init", "waiting for cloud-init to finish")
    wait_cloud_init(ctx=ctx, record=record, target=target, cancel=cancel)


def _restore_clone(*, ctx: ServiceContext, record: WorkspaceRecord, golden: GoldenState, client_key: str,
                   host_key: keys.KeyPair, report: _Reporter, cancel: CancelToken) -> None:
    """Golden RAM into the new domain, then, before anything else can log in, its own identity."""
    report.step("restore", f"restoring the RAM of {golden.golden_id} (port 127.0.0.1:{record.ssh_port})")
    GoldenStore(ctx=ctx).restore(golden=golden, domain=record.domain)
    report.step("identity", "new host key, user key, hostname, machine-id, RNG seed and clock")
    give_identity(ctx=ctx, record=record, golden=golden, client_key=client_key, host_key=host_key,
                  on_progress=report.forward, cancel=cancel)


def _refuse_existing(*, ctx: ServiceContext, name: str) -> None:
    if name in ctx.records.names() or ctx.backend.get(name=ctx.domain_name(name=name)) is not None:
        raise AlreadyExists(f"a workspace named {name!r} already exists",
                            hint=f"pick another name, or remove it first: agentbox destroy {name}")


def _short(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


class _Reporter:
    def __init__(self, sink: ProgressCallback) -> None:
        self._sink = sink
        self.steps = STEPS  # the path taken: WARM_STEPS while a clone is being made


    def step(self, step: str, detail: str) -> None:
        steps = self.steps if step in self.steps else (WARM_STEPS if step in WARM_STEPS else STEPS)
        index = steps.index(step) + 1 if step in steps else 0
        self._sink(Progress(step=step, detail=detail, index=index, total=len(steps)))

    def forward(self, progress: Progress) -> None:
        self._sink(progress)


def _volume_deleter(ctx: ServiceContext) -> Callable[[Path], None]:
    return lambda path: ctx.backend.delete_volume(path=path)


def _is_remote(ctx: ServiceContext) -> bool:
    """The VM runs on the libvirt host of a `qemu+ssh://` URI, not here."""
    return ctx.settings.backend is BackendKind.LIBVIRT and jump_host_of(ctx.settings.libvirt_uri) is not None
