"""The collaborators every service receives (built in bootstrap.py, faked in tests)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from agentbox.audit import AuditLog, utc_now
from agentbox.backends.base import Backend
from agentbox.config.paths import AppPaths
from agentbox.config.settings import Settings
from agentbox.config.templates import TemplateCatalogue
from agentbox.images.store import ImageStore
from agentbox.services.egress_runner import EgressRunner
from agentbox.services.guest import GuestAccess
from agentbox.stores.records import RecordStore


@dataclass(frozen=True)
class ServiceContext:
    paths: AppPaths
    settings: Settings
    backend: Backend
    catalogue: TemplateCatalogue
    images: ImageStore
    guest: GuestAccess
    fragments_dir: Path
    owner: str  # this installation's tag in libvirt metadata
    egress: EgressRunner  # the egress proxy and forward processes of running workspaces
    clock: Callable[[], datetime] = utc_now

    @property
    def records(self) -> RecordStore:
        return RecordStore(paths=self.paths)

    def audit(self, *, name: str) -> AuditLog:
        return AuditLog(path=self.paths.audit_log(name), clock=self.clock)

    def domain_name(self, *, name: str) -> str:
        return f"{self.settings.domain_prefix}{name}"

    def workspace_storage(self, *, name: str) -> Path:
        return self.settings.storage_dir / "workspaces" / self.domain_name(name=name)
