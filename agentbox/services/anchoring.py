"""Anchoring a workspace's trail at lifecycle moments (reset, stop, session end, checkpoint,
destroy, each receipt): the decision trail's head goes into the audit log (a `network.head`
record), then the audit log's head into its anchors file. So a trail or a log cut short or
edited shows in `audit verify` (see agentbox.audit.anchors and agentbox.audit.trail)."""

from __future__ import annotations

from agentbox.audit import HEAD_EVENT, Anchor, decision_trail, record_anchor
from agentbox.services.context import ServiceContext


def note_trail_head(*, ctx: ServiceContext, name: str, why: str) -> None:
    """The decision trail's head (on disk first) as a record of the audit log; nothing when
    there is no trail (no decision yet, or the workspace's files are gone)."""
    head = decision_trail(path=ctx.records.files(name=name).net_log).synced_head()
    if head is not None:
        ctx.audit(name=name).append(event=HEAD_EVENT, details={"seq": head.seq, "hash": head.hash, "why": why})


def anchor_trail(*, ctx: ServiceContext, name: str, why: str) -> Anchor | None:
    note_trail_head(ctx=ctx, name=name, why=why)
    return record_anchor(log=ctx.audit(name=name), why=why)
