"""Waiting for a booted guest: SSH with the pinned key, then cloud-init, with the console
log's tail as the hint when it does not come up."""

from __future__ import annotations


from agentbox.backends.base import DomainState
from agentbox.errors import GuestError
from agentbox.model.progress import CancelToken, ProgressCallback
from agentbox.remote.ssh import SshTarget
from agentbox.services.context import ServiceContext
from agentbox.stores.records import WorkspaceRecord

CONSOLE_TAIL_LINES = 15


def wait_for_guest(*, ctx: ServiceContext, record: WorkspaceRecord, target: SshTarget,
                   on_progress: ProgressCallback, cancel: CancelToken, timeout_s: float | None = None) -> None:
    """Wait for SSH with the pinned key (up to `timeout_s`, else the boot timeout); stop
    early (with the console tail) if the VM dies."""

    def check_alive() -> None:
        info = ctx.backend.get(name=record.domain)
        if info is None or info.state not in (DomainState.RUNNING, DomainState.PAUSED):
            state = info.state if info else "gone"
            raise GuestError(f"the VM of {record.name} stopped while booting (state: {state})",
                             hint=console_hint(record=record))

    try:
        limit = ctx.settings.boot_timeout_s if timeout_s is None else min(timeout_s, ctx.settings.boot_timeout_s)
        ctx.guest.wait_until_ready(target=target, timeout_s=limit, cancel=cancel,
                                   on_progress=on_progress, check_alive=check_alive)
    except GuestError as exc:
        if exc.hint is None:
            exc.hint = console_hint(record=record)
        raise


def console_hint(*, record: WorkspaceRecord) -> str:
    log = record.storage.console_log
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()[-CONSOLE_TAIL_LINES:]
    except OSError:
        return f"the guest console log was not written ({log})"
    tail = "\n    ".join(line.strip() for line in lines if line.strip())
    return f"last lines of the guest console ({log}):\n    {tail}" if tail else f"guest console log: {log}"


def wait_cloud_init(*, ctx: ServiceContext, record: WorkspaceRecord, target: SshTarget,
                     cancel: CancelToken) -> None:
    out = bytearray()
    err = bytearray()
    code = ctx.guest.run_command(target=target, argv=["cloud-init", "status", "--wait", "--long"],
                                 stdout=out.extend, stderr=err.extend,
                                 timeout_s=ctx.settings.boot_timeout_s, cancel=cancel)
    # cloud-init 22.4 exits 0 when done, 1 on error, 2 on recoverable error (degraded).
    if code not in (0, 2) or b"status: done" not in out:
        detail = (bytes(out) + bytes(err)).decode(errors="replace").strip()[-800:]
        raise GuestError(f"cloud-init did not finish cleanly in {record.name} (exit {code}):\n{detail}",
                         hint="check the template's cloud_init section; the guest log is /var/log/cloud-init.log")
