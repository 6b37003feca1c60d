"""A workspace's network: its policy, its egress proxy and the SSH forward into the guest.

Both helper processes run while the workspace runs, as children of its supervisor
(services/supervisor.py), which restarts them when they die and stops them with the VM.
While either is down the guest has no egress at all (fail closed). A policy change goes to
the live proxy (it applies to the next connection and cuts tunnels the new policy forbids)
or, while the proxy is down, straight to the policy file it will start from.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agentbox.audit import decision_details, unchained_path
from agentbox.audit.lines import Cursor, last_lines, lines_after
from agentbox.backends.base import DomainState
from agentbox.egress.client import ApprovalStream
from agentbox.egress.daemon import load_policy_file, save_policy_file
from agentbox.egress.proposal import Proposal, propose
from agentbox.egress.records import ConnectionRecord
from agentbox.egress.wire import record_from_json
from agentbox.config.templates import save_template_policy
from agentbox.errors import InvalidInput
from agentbox.model.network import NetworkMode, NetworkPolicy, parse_allow_entry, parse_policy
from agentbox.model.progress import CancelToken
from agentbox.model.template import Template
from agentbox.services.attachments import Attachments
from agentbox.services.context import ServiceContext
from agentbox.model.names import validate_workspace_name
from agentbox.services.lookup import load_ready_record
from agentbox.stores.records import WorkspaceFiles, WorkspaceRecord



@dataclass(frozen=True)
class NetworkStatus:
    name: str
    mode: NetworkMode
    allowlist: tuple[str, ...]
    proxy_running: bool
    forward_connected: bool
    egress: str  # in plain words: what the guest can reach right now, and why
    needs_repair: bool = False  # the VM runs, but its supervisor does not (agentbox start repairs)
    gateway_running: bool = False  # the credential gateway (guest 127.0.0.1:3129) listens


@dataclass(frozen=True)
class PolicyUpdate:
    policy: NetworkPolicy
    live: bool  # applied to the running proxy (else only to the file it starts from)
    cut: int  # open connections the change closed


class NetworkService:
    def __init__(self, *, ctx: ServiceContext) -> None:
        self._ctx = ctx

    # -- policy ---------------------------------------------------------------------------

    @staticmethod
    def template_policy(*, template: Template, mode: str | None) -> NetworkPolicy:
        return parse_policy(mode=mode or template.policy.network.value, allowlist=template.policy.allowlist)

    def write_policy(self, *, name: str, policy: NetworkPolicy) -> None:
        files = self._files(name)
        files.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        save_policy_file(path=files.policy, policy=policy)

    def policy(self, *, name: str) -> NetworkPolicy:
        validate_workspace_name(name)  # never a path outside the workspaces dir
        return load_policy_file(path=self._files(name).policy)

    def set_mode(self, *, name: str, mode: str) -> PolicyUpdate:
        load_ready_record(ctx=self._ctx, name=name)  # a bad or unknown name first, not a missing file
        current = self.policy(name=name)
        return self._apply(name=name, policy=parse_policy(mode=mode, allowlist=current.render()))

    def allow(self, *, name: str, entry: str) -> PolicyUpdate:
        load_ready_record(ctx=self._ctx, name=name)
        current = self.policy(name=name)
        return self._apply(name=name, policy=current.with_entry(entry=parse_allow_entry(text=entry)))

    def deny(self, *, name: str, entry: str) -> PolicyUpdate:
        load_ready_record(ctx=self._ctx, name=name)
        current = self.policy(name=name)
        wanted = parse_allow_entry(text=entry).render()
        kept = tuple(e for e in current.allowlist if e.render() != wanted)
        if len(kept) == len(current.allowlist):
            raise InvalidInput(f"{wanted} is not on the allowlist of {name!r}",
                               hint=f"agentbox net show {name} lists it")
        return self._apply(name=name, policy=NetworkPolicy(mode=current.mode, allowlist=kept))

    def _apply(self, *, name: str, policy: NetworkPolicy) -> PolicyUpdate:
        record = load_ready_record(ctx=self._ctx, name=name)
        if record.inspection and policy.mode is not NetworkMode.OFF:
            raise InvalidInput(f"{name!r} was restored from evidence ({record.inspection}) for inspection: "
                               "its network stays off",
                               hint=f"inspect it offline (agentbox ssh {name}), then agentbox destroy {name}; "
                                    "a workspace that needs a network is a new one: agentbox create")
        files = self._files(name)
        live, cut = False, 0
        if self._running(record):
            Attachments(ctx=self._ctx).repair(record=record)  # the proxy must be there to take it
            change = self._ctx.egress.set_policy(files=files, policy=policy)  # the proxy persists it
            live, cut, policy = True, change.cut, change.policy
        else:
            save_policy_file(path=files.policy, policy=policy)
        self._ctx.audit(name=name).append(event="network.policy", details={
            "mode": policy.mode.value, "allowlist": list(policy.render()), "live": live, "cut": cut})
        return PolicyUpdate(policy=policy, live=live, cut=cut)

    # -- learning ------------------------------------------------------------------------

    def propose(self, *, name: str) -> Proposal:
        """The smallest allowlist covering every connection the decision log shows allowed
        (after a session in mode `learn`, what that session needed)."""
        return propose(records=self.records(name=name))

    def apply_proposal(self, *, name: str, entries: tuple[str, ...]) -> PolicyUpdate:
        """Make `entries` (the proposal, or the part of it the user kept) the allowlist and
        switch to mode `allowlist`: from now on only what was learned goes out."""
        allowlist = parse_policy(mode=NetworkMode.ALLOWLIST.value, allowlist=entries)
        update = self._apply(name=name, policy=allowlist)
        self._ctx.audit(name=name).append(event="network.proposal_applied", details={
            "allowlist": list(update.policy.render())})
        return update

    def save_proposal(self, *, name: str, template: str, entries: tuple[str, ...]) -> Path:
        """Write `entries` as the allowlist (mode `allowlist`) of the user template `template`,
        made from the workspace's own template when there is no user template of that name."""
        record = load_ready_record(ctx=self._ctx, name=name)
        policy = parse_policy(mode=NetworkMode.ALLOWLIST.value, allowlist=entries)
        base = self._ctx.catalogue.get(name=record.template)
        path = save_template_policy(user_dir=self._ctx.catalogue.user_dir, name=template, base=base,
                                    mode=policy.mode, allowlist=policy.render())
        self._ctx.audit(name=name).append(event="network.proposal_saved", details={
            "template": template, "file": str(path), "allowlist": list(policy.render())})
        return path

    # -- looking -------------------------------------------------------------------------

    def show(self, *, name: str) -> NetworkStatus:
        """The policy and whether egress works right now. Only looks: repairing is the
        supervisor's job (and `start`'s, under the workspace lock)."""
        record = load_ready_record(ctx=self._ctx, name=name)
        policy = self.policy(name=name)
        running = self._running(record)
        health = self._ctx.egress.health(files=self._files(name))
        proxy, forward = health.proxy_running, health.forward_connected
        if not running:
            words = "none: the workspace is not running"
        elif not (proxy and forward):
            why = (health.problem or ("its supervisor is not running (agentbox start " + name + " repairs it)"
                                      if not health.supervised else "the egress proxy is down" if not proxy
                                      else "the SSH forward is down"))
            words = "none (fail closed): " + why
        else:
            words = {NetworkMode.OFF: "none: network mode is off",
                     NetworkMode.ALLOWLIST: "only the allowlist, through the egress proxy",
                     NetworkMode.LEARN: "any public address, through the egress proxy, each one recorded "
                                        f"(agentbox net propose {name} makes an allowlist of them)",
                     NetworkMode.OPEN: "any public address, through the egress proxy"}[policy.mode]
        return NetworkStatus(name=name, mode=policy.mode, allowlist=policy.render(), proxy_running=proxy,
                             forward_connected=forward, egress=words, needs_repair=running and not health.supervised,
                             gateway_running=running and health.gateway_running)

    def records(self, *, name: str, follow: bool = False,
                cancel: CancelToken | None = None) -> Iterator[ConnectionRecord]:
        """The proxy's decisions, oldest first (lines from before the chain, then the trail's
        kept segments and its active file); with `follow`, then new ones as they come, through
        any rotation. A damaged line is passed over here: `audit verify` reports it."""
        load_ready_record(ctx=self._ctx, name=name)
        path = self._files(name).net_log
        for line in lines_after(path=unchained_path(path), cursor=Cursor()):
            if (record := _decision_or_none(line)) is not None:
                yield record
        cursor = Cursor()
        cancel = cancel or CancelToken()
        while True:
            for line in lines_after(path=path, cursor=cursor):
                if (record := _decision_or_none(line)) is not None:
                    yield record
            if not follow:
                return
            cancel.wait(0.5)

    def recent(self, *, name: str, count: int) -> tuple[ConnectionRecord, ...]:
        """The newest `count` decisions, oldest first, read from the end of the trail (a damaged
        line is passed over): what a glance at the traffic needs, at any size of log."""
        load_ready_record(ctx=self._ctx, name=name)
        path = self._files(name).net_log
        found = last_lines(path=path, count=count, parse=_decision_or_none)
        if len(found) < count:
            found = last_lines(path=unchained_path(path), count=count - len(found), parse=_decision_or_none) + found
        return tuple(found)

    def approval_requests(self, *, name: str) -> ApprovalStream:
        """Become an approver for the workspace's proxy: in allowlist mode it holds connections
        to unlisted destinations while an approver is listening, and they arrive on this stream
        to be answered (close it to stop; what it leaves unanswered is then denied)."""
        load_ready_record(ctx=self._ctx, name=name)
        return self._ctx.egress.approvals(files=self._files(name))

    def _running(self, record: WorkspaceRecord) -> bool:
        info = self._ctx.backend.get(name=record.domain)
        return info is not None and info.state is DomainState.RUNNING

    def _files(self, name: str) -> WorkspaceFiles:
        return self._ctx.records.files(name=name)


def _decision_or_none(line: bytes) -> ConnectionRecord | None:
    details = decision_details(line)
    if details is None:
        return None
    try:
        return record_from_json(dict(details))
    except (ValueError, KeyError, TypeError):
        return None
