"""Finding a workspace that commands can act on, with one clear error when they cannot."""

from __future__ import annotations

from agentbox.errors import AgentboxError, NotFound
from agentbox.model.names import validate_workspace_name
from agentbox.services.context import ServiceContext
from agentbox.stores.records import Phase, WorkspaceRecord


def load_ready_record(*, ctx: ServiceContext, name: str) -> WorkspaceRecord:
    """The record of a fully created workspace; NotFound or a 'broken' error otherwise."""
    validate_workspace_name(name)
    broken_hint = f"agentbox destroy {name} removes what is left of it"
    try:
        record = ctx.records.load(name=name)
    except AgentboxError as exc:
        raise AgentboxError(f"workspace {name!r} is broken: {exc.message}", hint=broken_hint) from None
    if record is None:
        if ctx.backend.get(name=ctx.domain_name(name=name)) is None:
            raise NotFound(f"no workspace named {name!r}", hint="agentbox list shows your workspaces")
        raise AgentboxError(f"workspace {name!r} is broken: its record is missing", hint=broken_hint)
    if record.phase is not Phase.READY:
        raise AgentboxError(f"workspace {name!r} is not ready: its {record.phase.value} is in progress "
                            "or was interrupted", hint=f"wait for it to finish, or: {broken_hint}")
    return record
