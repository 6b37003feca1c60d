"""Everything that follows a VM's life besides the VM itself: its supervisor (with the egress
proxy and the SSH forward), its read-only shares (devices and host mounts) and its outbox.

Services call one entry point per moment of that life instead of wiring each attachment
themselves, so the order that matters is written down once:
- egress comes up only after the clean snapshot (a RAM snapshot must not hold a live
  forward: the restored guest would keep a dead session bound to port 3128);
- virtiofs devices are never in a RAM snapshot (vhost-user-fs is not migratable);
- a guest going down has no egress from the moment agentbox decides to stop it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from agentbox.errors import AgentboxError
from agentbox.services.context import ServiceContext
from agentbox.services.gateway_access import GatewayAccess
from agentbox.services.shares import ShareService
from agentbox.stores.records import WorkspaceFiles, WorkspaceRecord

log = logging.getLogger(__name__)


class Attachments:
    def __init__(self, *, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._shares = ShareService(ctx=ctx)
        self._gateway = GatewayAccess(ctx=ctx)

    def before_boot(self, *, record: WorkspaceRecord) -> None:
        """Host mounts a crash left behind go before the VM starts again."""
        self._shares.release_all(record=record)

    def while_creating(self, *, record: WorkspaceRecord) -> None:
        """Create has defined the VM: its supervisor, proxy and gateway start now, while the VM
        boots or is restored, the forward held down until `after_boot` (after the clean
        snapshot), so that only the forward's connect is left at the end."""
        self._ctx.egress.start(record=record, files=self._files(record), forward_down=True)

    def after_boot(self, *, record: WorkspaceRecord, shares_attached: bool = False) -> None:
        """The VM runs (booted, restored or reverted): supervisor, egress and the credential
        gateway up, shares and the outbox plugged in and mounted, and a fresh gateway token in
        the guest (unless the caller did both in its own round trip). The forward connects
        while the shares and the token go in, in one SSH round trip: under TCG each costs
        the guest about a second."""
        files = self._files(record)
        if not shares_attached:
            self._ctx.egress.start(record=record, files=files, forward_down=False)
            self._shares.attach_all(record=record, then=self._gateway.mint_script(record=record))
        self._ctx.egress.ensure_running(record=record, files=files)

    def repair(self, *, record: WorkspaceRecord) -> None:
        """A running VM whose supervisor is gone (a host restart, a killed process)."""
        self._ctx.egress.ensure_running(record=record, files=self._files(record))

    def before_power_cycle(self, *, record: WorkspaceRecord) -> None:
        """A reset is about to destroy and revert (or re-create) the VM: the supervisor
        stays through it (until `after_boot`); its forward reconnects to the new guest."""
        self._ctx.egress.hold_through_power_cycle(files=self._files(record))

    def before_swap(self, *, record: WorkspaceRecord) -> None:
        """A reset swaps to the standby copy: as `before_power_cycle`, and the forward stays
        down until `after_boot` (the old guest answers on the same port until it is gone)."""
        self._ctx.egress.hold_through_power_cycle(files=self._files(record), forward_down=True)

    def after_swap(self, *, record: WorkspaceRecord) -> None:
        """The copy has the port and runs, the old guest is paused without it: the forward may
        connect now, while the reset's refresh round trip runs (until `after_boot`, as any reset)."""
        self._ctx.egress.hold_through_power_cycle(files=self._files(record), forward_down=False)

    def after_revert(self, *, record: WorkspaceRecord) -> str:
        """Plug the shares back into the reverted VM; returns the guest's mount script, for
        the caller's own SSH round trip (the reset's refresh), then `after_boot` with
        shares_attached. The script installs a newly minted gateway token too: the old
        one dies with the state it belonged to."""
        mounts = self._shares.attach_devices(record=record)
        return " && ".join(part for part in (mounts, self._gateway.mint_script(record=record)) if part)

    def after_refresh(self, *, record: WorkspaceRecord, guest_stderr: bytes) -> None:
        """The reset ran `after_revert`'s script: keep the read-only proofs it reported."""
        self._shares.record_proofs(record=record, output=guest_stderr)

    def before_power_off(self, *, name: str) -> None:
        """No egress from a guest that is going down (or being removed, record or not)."""
        self._ctx.egress.stop(files=self._ctx.records.files(name=name))

    def after_power_off(self, *, record: WorkspaceRecord, remove_outbox: bool = False) -> None:
        """The VM is off: its supervisor has nothing left to watch, host mounts go; with
        `remove_outbox` (destroy) the outbox folder too."""
        self._ctx.egress.stop(files=self._files(record))
        self._shares.release_all(record=record, remove_outbox=remove_outbox)

    @contextmanager
    def around_snapshot(self, *, record: WorkspaceRecord, running: bool) -> Iterator[None]:
        """A RAM snapshot holds neither the forward nor virtiofs devices; both come back after."""
        if running:
            self._ctx.egress.stop(files=self._files(record), forward_only=True)
        try:
            with self._shares.detached_for_snapshot(record=record):
                yield
        except BaseException:
            # The snapshot's own error is what the user must see (a full storage dir, say): a
            # forward that does not come back after it (a guest paused by that full disk) must
            # not replace it. Egress stays closed meanwhile; the supervisor keeps retrying.
            if running:
                try:
                    self._ctx.egress.ensure_running(record=record, files=self._files(record))
                except AgentboxError as again:
                    log.warning("%s: after the failed snapshot: %s", record.name, again.message)
            raise
        if running:
            self._ctx.egress.ensure_running(record=record, files=self._files(record))

    def _files(self, record: WorkspaceRecord) -> WorkspaceFiles:
        return self._ctx.records.files(name=record.name)
