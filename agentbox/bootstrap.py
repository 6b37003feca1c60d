"""The one place that picks concrete collaborators: paths, settings, backend, guest access."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from agentbox.backends.base import Backend
from agentbox.backends.libvirt.backend import LibvirtBackend
from agentbox.backends.qemu import QemuBackend
from agentbox.backends.routing import BackendRouter
from agentbox.config.paths import AppPaths
from agentbox.config.settings import DEFAULT_URI, Settings, load_settings
from agentbox.errors import AgentboxError
from agentbox.model.remote_host import jump_host_of
from agentbox.model.workspace import BackendKind
from agentbox.stores.records import SLOT_B, RecordStore, other_slot
from agentbox.config.templates import TemplateCatalogue, builtin_templates_dir, fragments_dir
from agentbox.images.store import ImageStore
from agentbox.services.agents import AgentService
from agentbox.services.audit import AuditService
from agentbox.services.audit_export import AuditBundles
from agentbox.services.budgets import BudgetService
from agentbox.services.context import ServiceContext
from agentbox.services.crash_log import CrashLog
from agentbox.services.create import CreateService
from agentbox.services.doctor import DoctorService
from agentbox.services.egress_runner import SupervisedEgress
from agentbox.services.gateway_access import GatewayAccess
from agentbox.services.guest import SshGuestAccess
from agentbox.services.images import ImageService
from agentbox.services.network import NetworkService
from agentbox.services.outbox import OutboxService
from agentbox.stores.api_keys import ApiKeyStore
from agentbox.stores.receipts import ReceiptStore
from agentbox.stores.recordings import RecordingStore
from agentbox.services.shares import ShareService
from agentbox.services.sessions import SessionService
from agentbox.services.snapshots import SnapshotService
from agentbox.services.standby import StandbyService
from agentbox.services.supervisor import WorkspaceSupervisor
from agentbox.services.panic import PanicService
from agentbox.services.recordings import RecordingService
from agentbox.services.workspaces import WorkspaceService


@dataclass(frozen=True)
class Services:
    """Everything the CLI and the TUI call; they never see the ServiceContext behind it."""

    workspaces: WorkspaceService
    agents: AgentService
    create: CreateService
    images: ImageService
    snapshots: SnapshotService
    sessions: SessionService
    network: NetworkService
    shares: ShareService
    outbox: OutboxService
    supervisor: WorkspaceSupervisor
    doctor: DoctorService
    audit: AuditService
    receipts: ReceiptStore
    recordings: RecordingService
    panic: PanicService
    crash_log: CrashLog
    gateway: GatewayAccess  # phantom tokens and the session's API use (the credential gateway's)
    budgets: BudgetService  # per-session host budgets: egress bytes, disk writes, CPU time
    keys: ApiKeyStore  # the host's API keys, the same store `agentbox key set` writes (the wizard's key step)
    standby: StandbyService  # a paused clean copy per workspace, for resets by swap
    clock: Callable[[], datetime]


@dataclass(frozen=True)
class History:
    """What reads the data dir alone (audit logs, receipts): it works with broken settings or
    no hypervisor, and after the workspace is gone."""

    audit: AuditService
    receipts: ReceiptStore
    recordings: RecordingStore
    bundles: AuditBundles


def build_context(*, paths: AppPaths | None = None) -> ServiceContext:
    paths = paths or AppPaths.default()
    settings = load_settings(paths=paths)
    owner = str(paths.data_dir)
    return ServiceContext(
        paths=paths,
        settings=settings,
        backend=build_backend(paths=paths, settings=settings, owner=owner),
        catalogue=TemplateCatalogue(builtin_dir=builtin_templates_dir(), user_dir=paths.user_templates_dir),
        images=ImageStore(image_dir=settings.image_dir),
        guest=SshGuestAccess(),
        fragments_dir=fragments_dir(),
        owner=owner,
        egress=SupervisedEgress(paths=paths),
    )


def build_backend(*, paths: AppPaths, settings: Settings, owner: str) -> BackendRouter[BackendKind]:
    """Both backends; new workspaces go to `settings.backend`, existing ones stay on the one
    their record names (and a libvirt one on the host its record names)."""
    backends: dict[BackendKind, Backend] = {
        BackendKind.LIBVIRT: libvirt_hosts(paths=paths, settings=settings, make_backend=lambda uri: LibvirtBackend(
            uri=uri, owner=owner, accel=settings.accel, env=os.environ, remote_pool=settings.remote_pool)),
        BackendKind.QEMU: QemuBackend(state_dir=paths.data_dir / "qemu", owner=owner, accel=settings.accel,
                                      env=os.environ),
    }
    kind_of, kinds_in_use = recorded_backends(paths=paths, settings=settings)
    return BackendRouter(backends=backends, default=settings.backend, kind_of=kind_of, kinds_in_use=kinds_in_use)


def libvirt_hosts(*, paths: AppPaths, settings: Settings,
                  make_backend: Callable[[str], Backend]) -> BackendRouter[str]:
    """One libvirt backend per host (`libvirt_uri` and the `hosts:` list; none connects until
    used): new domains go to `libvirt_uri`, a workspace's to the host in its record."""
    local = settings.libvirt_uri if jump_host_of(settings.libvirt_uri) is None else DEFAULT_URI
    records = RecordStore(paths=paths)

    def uri_of_record(name: str) -> str | None:
        try:
            record = records.load(name=name)
        except AgentboxError:
            return None
        if record is None or record.backend != BackendKind.LIBVIRT.value:
            return None
        return record.remote_uri or local

    def uri_of(domain: str) -> str | None:
        if not domain.startswith(settings.domain_prefix):
            return None
        return uri_of_record(domain[len(settings.domain_prefix):].removesuffix(SLOT_B))

    def uris_in_use() -> frozenset[str]:
        return frozenset(uri for name in records.names() if (uri := uri_of_record(name)) is not None)

    uris = dict.fromkeys((settings.libvirt_uri, *settings.hosts, *uris_in_use()))
    backends = {uri: make_backend(uri) for uri in uris}
    return BackendRouter(backends=backends, default=settings.libvirt_uri, kind_of=uri_of, kinds_in_use=uris_in_use)


def recorded_backends(*, paths: AppPaths, settings: Settings) -> tuple[
        Callable[[str], BackendKind | None], Callable[[], frozenset[BackendKind]]]:
    """From the workspace records: the backend a domain's workspace was made on, and the
    backends any workspace uses."""
    records = RecordStore(paths=paths)

    def kind_of(domain: str) -> BackendKind | None:
        if not domain.startswith(settings.domain_prefix):
            return None
        try:
            record = records.load(name=domain[len(settings.domain_prefix):].removesuffix(SLOT_B))
        except AgentboxError:
            return None  # a damaged record: the default backend answers (and `destroy` cleans up)
        if record is None or domain not in (record.domain, other_slot(record.domain)):
            return None
        try:
            return BackendKind(record.backend)
        except ValueError:
            return None

    def kinds_in_use() -> frozenset[BackendKind]:
        kinds = set()
        for name in records.names():
            try:
                record = records.load(name=name)
            except AgentboxError:
                continue
            if record is not None and record.backend in {kind.value for kind in BackendKind}:
                kinds.add(BackendKind(record.backend))
        return frozenset(kinds)

    return kind_of, kinds_in_use


def build_services(*, ctx: ServiceContext | None = None) -> Services:
    ctx = ctx or build_context()
    workspaces = WorkspaceService(ctx=ctx)
    # A reset during a session ends the session first (receipt); sessions are built on
    # snapshots, so the snapshot service reaches them late-bound.
    snapshots = SnapshotService(ctx=ctx, end_session=lambda *args: sessions.reset_in_session(*args))
    sessions = SessionService(ctx=ctx, workspaces=workspaces, snapshots=snapshots)
    network = NetworkService(ctx=ctx)
    budgets = BudgetService(ctx=ctx, sessions=sessions)
    supervisor = WorkspaceSupervisor(ctx=ctx, end_session=sessions.expire, read_session=sessions.deadline,
                                     check_budget=budgets.check, enforce_budget=budgets.enforce)
    shares = ShareService(ctx=ctx)
    return Services(workspaces=workspaces, create=CreateService(ctx=ctx), images=ImageService(ctx=ctx),
                    agents=AgentService(ctx=ctx, sessions=sessions, shares=shares),
                    snapshots=snapshots, sessions=sessions, network=network,
                    shares=shares, outbox=OutboxService(ctx=ctx), doctor=DoctorService(ctx=ctx),
                    audit=AuditService(paths=ctx.paths, clock=ctx.clock), receipts=ReceiptStore(paths=ctx.paths),
                    crash_log=CrashLog(path=ctx.paths.error_log, clock=ctx.clock), clock=ctx.clock,
                    supervisor=supervisor, recordings=RecordingService(ctx=ctx),
                    panic=PanicService(ctx=ctx, network=network, sessions=sessions, snapshots=snapshots),
                    gateway=GatewayAccess(ctx=ctx), budgets=budgets,
                    keys=ApiKeyStore(config_dir=ctx.paths.config_dir),
                    standby=StandbyService(ctx=ctx, reset_locked=lambda record, progress, cancel:
                                           snapshots.reset_locked(record=record, on_progress=progress, cancel=cancel)))


def build_keys(*, paths: AppPaths | None = None) -> ApiKeyStore:
    """The host's API keys (keyring or a 0600 file): no hypervisor or settings needed."""
    return ApiKeyStore(config_dir=(paths or AppPaths.default()).config_dir)


def build_history(*, paths: AppPaths | None = None) -> History:
    paths = paths or AppPaths.default()
    return History(audit=AuditService(paths=paths), receipts=ReceiptStore(paths=paths),
                   recordings=RecordingStore(paths=paths), bundles=AuditBundles(paths=paths))
