"""Finding a workspace's audit log (the chain itself lives in agentbox.audit)."""

from __future__ import annotations

from pathlib import Path

from agentbox.config.paths import AppPaths
from agentbox.errors import NotFound
from agentbox.model.names import validate_workspace_name


def find_audit_log(*, paths: AppPaths, name: str) -> Path:
    """The log of workspace `name`, which outlives the workspace unless destroyed with --purge."""
    validate_workspace_name(name)
    path = paths.audit_log(name)
    if not path.is_file():
        raise NotFound(f"no audit log for workspace {name!r}",
                       hint="agentbox list shows your workspaces; a log starts when a workspace is created "
                            "and is kept after destroy unless --purge was given")
    return path
