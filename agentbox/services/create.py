"""Create a workspace: image → keys → disk → seed → domain → boot → SSH → cloud-init.

Every step that leaves something behind registers its undo first; any failure (or
cancel, or Ctrl-C) runs the undo stack, so a failed create leaves nothing. A create killed
outright leaves a record in phase `creating`, which `list` shows as broken.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from agentbox.audit import record_anchor
from agentbox.backends.base import DirectKernelBoot, DiskSpec, DomainMetadata, DomainSpec
from agentbox.errors import AgentboxError, AlreadyExists, InvalidInput
from agentbox.images.store import ImageInfo
from agentbox.model.names import validate_workspace_name
from agentbox.model.network import NetworkPolicy
from agentbox.model.progress import CancelToken, Progress, ProgressCallback
from agentbox.model.template import Resources, Template
from agentbox.provision import cloudinit, keys, seed
from agentbox.services.attachments import Attachments
from agentbox.services.context import ServiceContext
from agentbox.services.guest_ready import wait_cloud_init, wait_for_guest
from agentbox.host.locks import workspace_lock
from agentbox.stores.records import Phase, WorkspaceRecord
from agentbox.services.network import NetworkService
from agentbox.services.outbox_limit import validate_limit_mib
from agentbox.services.share_paths import default_tag, parse_share_spec, validate_share_source, validate_tag
from agentbox.services.shares import ShareService
from agentbox.services.snapshots import SnapshotService
from agentbox.host.storage import remove_storage
from agentbox.services.ssh_access import ssh_target
from agentbox.stores.ssh_config import write_workspace_ssh_files

STEPS = ("image", "keys", "disk", "seed", "define", "boot", "ssh", "cloud-init", "clean", "network", "shares",
         "done")


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
    share_specs = [parse_share_spec(spec) for spec in request.shares]
    for source, tag in share_specs:  # refuse bad folders and tags before anything is made
        path = validate_share_source(source=source, home=Path.home(),
                                     own_dirs=(*ctx.paths.own_dirs(), ctx.settings.storage_dir),
                                     allow_system_folder=request.allow_system_folder)
        validate_tag(tag or default_tag(path))
    with workspace_lock(paths=ctx.paths, name=name):
        _refuse_existing(ctx=ctx, name=name)
        report = _Reporter(on_progress)
        report.step("image", f"image for template {template.name}")
        image = ctx.images.ensure(template=template, on_progress=on_progress, cancel=cancel)
        undo = _Undo()
        try:
            return _build(ctx=ctx, name=name, template=template, resources=resources, image=image,
                          outbox_mib=outbox_mib, policy=policy, share_specs=share_specs,
                          allow_system_folder=request.allow_system_folder, report=report, cancel=cancel, undo=undo)
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


def _build(*, ctx: ServiceContext, name: str, template: Template, resources: Resources, image: ImageInfo,
           outbox_mib: int, policy: NetworkPolicy, share_specs: list[tuple[str, str | None]], allow_system_folder: bool,
           report: _Reporter, cancel: CancelToken, undo: _Undo) -> WorkspaceRecord:
    files = ctx.records.files(name=name)
    storage = ctx.workspace_storage(name=name)
    domain = ctx.domain_name(name=name)
    host_key = keys.generate_ed25519(comment=f"agentbox-{name}-host")
    record = WorkspaceRecord(
        name=name, domain=domain, template=template.name, image_id=image.image_id,
        created=ctx.clock().isoformat(timespec="seconds"), ssh_port=_free_port(ctx=ctx),
        resources=resources, storage_dir=str(storage), host_key_public=host_key.public_openssh,
        outbox_limit_mib=outbox_mib, backend=ctx.settings.backend.value,
        phase=Phase.CREATING, reset_after_session=template.policy.reset_after_session,
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
    report.step("disk", f"{resources.disk_gib} GiB overlay on {image.image_id}")
    undo.push(lambda: remove_storage(storage=storage, delete_volume=_volume_deleter(ctx)))
    storage.mkdir(parents=True, exist_ok=True, mode=0o711)
    storage.chmod(0o711)  # QEMU's user must traverse; the files inside are its alone
    disk = record.storage.disk
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
    spec = DomainSpec(
        name=domain,
        metadata=DomainMetadata(workspace=name, owner=ctx.owner, template=template.name, created=record.created),
        vcpus=resources.vcpus, memory_mib=resources.memory_mib,
        disks=(DiskSpec(path=disk, format="qcow2", serial="agentbox-root"),
               DiskSpec(path=seed_path, format="raw", readonly=True, serial="agentbox-seed")),
        ssh_port=record.ssh_port, console_log=record.storage.console_log,
        kernel_boot=(DirectKernelBoot(kernel=image.kernel, initrd=image.initrd, cmdline=image.cmdline or "")
                     if image.kernel and image.initrd else None),
    )
    ctx.backend.define(spec=spec)
    undo.push(lambda: ctx.backend.undefine(name=domain))

    cancel.raise_if_cancelled()
    report.step("boot", "starting the VM")
    undo.push(lambda: ctx.backend.destroy(name=domain))
    ctx.backend.start(name=domain)

    report.step("ssh", f"waiting for SSH on 127.0.0.1:{record.ssh_port} (pinned host key)")
    target = ssh_target(record=record, files=files)
    wait_for_guest(ctx=ctx, record=record, target=target, on_progress=report.forward, cancel=cancel)

    report.step("cloud-init", "waiting for cloud-init to finish")
    wait_cloud_init(ctx=ctx, record=record, target=target, cancel=cancel)

    report.step("clean", "saving the clean state")
    record = SnapshotService(ctx=ctx).take_clean(record=record, on_progress=report.forward)
    # Only after the snapshot: a clean state must not hold a live forward (see attachments.py).
    report.step("network", f"supervisor, egress proxy and forward (network {policy.mode.value}); "
                f"outbox ({record.outbox_limit_mib} MiB)")
    attachments = Attachments(ctx=ctx)
    undo.push(lambda: attachments.after_power_off(record=record, remove_outbox=True))
    attachments.after_boot(record=record)
    report.step("shares", f"{len(share_specs)} read-only share(s)")
    shares = ShareService(ctx=ctx)
    for source, tag in share_specs:
        added = shares.add_locked(record=record, source=source, tag=tag, allow_system_folder=allow_system_folder)
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
    record_anchor(log=audit, why="created")
    report.step("done", f"workspace {name} is ready: agentbox ssh {name}")
    return record


def _refuse_existing(*, ctx: ServiceContext, name: str) -> None:
    if name in ctx.records.names() or ctx.backend.get(name=ctx.domain_name(name=name)) is not None:
        raise AlreadyExists(f"a workspace named {name!r} already exists",
                            hint=f"pick another name, or remove it first: agentbox destroy {name}")


def _free_port(*, ctx: ServiceContext) -> int:
    """A free loopback port not recorded by any other workspace (stopped ones hold none)."""
    taken = set()
    for other in ctx.records.names():
        try:
            record = ctx.records.load(name=other)
        except AgentboxError:
            continue
        if record is not None:
            taken.add(record.ssh_port)
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in taken:
            return port
    raise AgentboxError("could not find a free port on 127.0.0.1 for SSH")


def _short(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


class _Reporter:
    def __init__(self, sink: ProgressCallback) -> None:
        self._sink = sink

    def step(self, step: str, detail: str) -> None:
        index = STEPS.index(step) + 1 if step in STEPS else 0
        self._sink(Progress(step=step, detail=detail, index=index, total=len(STEPS)))

    def forward(self, progress: Progress) -> None:
        self._sink(progress)


def _volume_deleter(ctx: ServiceContext) -> Callable[[Path], None]:
    return lambda path: ctx.backend.delete_volume(path=path)
