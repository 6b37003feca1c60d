"""Where agentbox keeps things.

Per-user files (settings, templates, keys, audit logs, locks) go in the platformdirs
directories. Disks, seeds, kernels and base images go in the storage directory, which under
`qemu:///system` must be reachable by the `libvirt-qemu` user: a 0700 home is not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP = "agentbox"
SYSTEM_STORAGE_DIR = Path("/var/lib/libvirt/images/agentbox")
ROOT_ENV = "AGENTBOX_ROOT"


@dataclass(frozen=True)
class AppPaths:
    config_dir: Path
    data_dir: Path
    cache_dir: Path

    @classmethod
    def default(cls) -> AppPaths:
        """platformdirs locations, or everything under $AGENTBOX_ROOT when it is set."""
        root = os.environ.get(ROOT_ENV)
        if root:
            return cls.under(root=Path(root))
        return cls(
            config_dir=Path(platformdirs.user_config_dir(APP)),
            data_dir=Path(platformdirs.user_data_dir(APP)),
            cache_dir=Path(platformdirs.user_cache_dir(APP)),
        )

    @classmethod
    def under(cls, *, root: Path) -> AppPaths:
        return cls(config_dir=root / "config", data_dir=root / "data", cache_dir=root / "cache")

    @property
    def root(self) -> Path | None:
        """The single root these paths were made `under`, if they were (tests, AGENTBOX_ROOT)."""
        root = self.config_dir.parent
        return root if self == AppPaths.under(root=root) else None

    @property
    def settings_file(self) -> Path:
        return self.config_dir / "settings.yaml"

    @property
    def user_templates_dir(self) -> Path:
        return self.config_dir / "templates"

    @property
    def workspaces_dir(self) -> Path:
        return self.data_dir / "workspaces"

    @property
    def locks_dir(self) -> Path:
        return self.data_dir / "locks"

    def workspace_dir(self, name: str) -> Path:
        return self.workspaces_dir / name

    @property
    def audit_dir(self) -> Path:
        # Outside the workspace dir, so a workspace's log outlives its destroy.
        return self.data_dir / "audit"

    def audit_log(self, name: str) -> Path:
        return self.audit_dir / f"{name}.jsonl"

    @property
    def error_log(self) -> Path:
        # Tracebacks of errors nobody expected (the TUI cannot print them).
        return self.cache_dir / "errors.log"

    @property
    def receipts_dir(self) -> Path:
        # Beside the audit logs, for the same reason: receipts outlive reset and destroy.
        return self.data_dir / "receipts"

    def workspace_receipts(self, name: str) -> Path:
        return self.receipts_dir / name

    @property
    def evidence_dir(self) -> Path:
        # What a session left for later inspection (recordings): kept after reset and destroy.
        return self.data_dir / "evidence"

    def workspace_recordings(self, name: str) -> Path:
        return self.evidence_dir / name / "recordings"

    def own_dirs(self) -> tuple[Path, ...]:
        """Directories that are agentbox's own (never shareable into a guest)."""
        return (self.config_dir, self.data_dir, self.cache_dir)
