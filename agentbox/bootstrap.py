"""The one place that picks concrete collaborators: paths, settings, backend, guest access."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from agentbox.backends.libvirt.backend import LibvirtBackend
from agentbox.config.paths import AppPaths
from agentbox.config.settings import load_settings
from agentbox.config.templates import TemplateCatalogue, builtin_templates_dir, fragments_dir
from agentbox.images.store import ImageStore
from agentbox.services.agents import AgentService
from agentbox.services.audit import AuditService
from agentbox.services.audit_export import AuditBundles
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
        backend=LibvirtBackend(uri=settings.libvirt_uri, owner=owner, accel=settings.accel, env=os.environ),
        catalogue=TemplateCatalogue(builtin_dir=builtin_templates_dir(), user_dir=paths.user_templates_dir),
        images=ImageStore(image_dir=settings.image_dir),
        guest=SshGuestAccess(),
        fragments_dir=fragments_dir(),
        owner=owner,
        egress=SupervisedEgress(paths=paths),
    )


def build_services(*, ctx: ServiceContext | None = None) -> Services:
    ctx = ctx or build_context()
    workspaces = WorkspaceService(ctx=ctx)
    # A reset during a session ends the session first (receipt); sessions are built on
    # snapshots, so the snapshot service reaches them late-bound.
    snapshots = SnapshotService(ctx=ctx, end_session=lambda *args: sessions.reset_in_session(*args))
    sessions = SessionService(ctx=ctx, workspaces=workspaces, snapshots=snapshots)
    network = NetworkService(ctx=ctx)
    supervisor = WorkspaceSupervisor(ctx=ctx, end_session=sessions.expire, read_session=sessions.deadline)
    shares = ShareService(ctx=ctx)
    return Services(workspaces=workspaces, create=CreateService(ctx=ctx), images=ImageService(ctx=ctx),
                    agents=AgentService(ctx=ctx, sessions=sessions, shares=shares),
                    snapshots=snapshots, sessions=sessions, network=network,
                    shares=shares, outbox=OutboxService(ctx=ctx), doctor=DoctorService(ctx=ctx),
                    audit=AuditService(paths=ctx.paths, clock=ctx.clock), receipts=ReceiptStore(paths=ctx.paths),
                    crash_log=CrashLog(path=ctx.paths.error_log, clock=ctx.clock), clock=ctx.clock,
                    supervisor=supervisor, recordings=RecordingService(ctx=ctx),
                    panic=PanicService(ctx=ctx, network=network, sessions=sessions, snapshots=snapshots),
                    gateway=GatewayAccess(ctx=ctx))


def build_keys(*, paths: AppPaths | None = None) -> ApiKeyStore:
    """The host's API keys (keyring or a 0600 file): no hypervisor or settings needed."""
    return ApiKeyStore(config_dir=(paths or AppPaths.default()).config_dir)


def build_history(*, paths: AppPaths | None = None) -> History:
    paths = paths or AppPaths.default()
    return History(audit=AuditService(paths=paths), receipts=ReceiptStore(paths=paths),
                   recordings=RecordingStore(paths=paths), bundles=AuditBundles(paths=paths))
