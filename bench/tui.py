"""The TUI's speed on the Fake backend with 50 workspaces: time to the first full frame
(every row listed and the first workspace's details drawn), and the median time from a
key press (cursor down) to the details showing the next workspace. Then the cost of one
details refresh (what the dashboard redoes every 2 s) for a workspace whose audit log and
network log hold 200,000 records each (goal: < 50 ms).

Usage: .venv/bin/python bench/tui.py [--workspaces 50] [--presses 30] [--records 200000] [--refreshes 20]
No VM, no libvirt: services run on the in-memory backend with stand-ins for the guest's
SSH and the egress processes, so this measures the TUI itself.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from agentbox.audit import DECISION_EVENT, ROTATE_BYTES, decision_trail, read_records, tail_records, verify_chain
from agentbox.audit.record import encode_record
from agentbox.audit.segments import next_segment
from agentbox.backends.fake import FakeBackend
from agentbox.bootstrap import build_services
from agentbox.config.paths import AppPaths
from agentbox.config.settings import Settings
from agentbox.config.templates import TemplateCatalogue, builtin_templates_dir, fragments_dir
from agentbox.egress.client import PolicyChange
from agentbox.egress.daemon import save_policy_file
from agentbox.egress.policy import Decision
from agentbox.egress.records import ConnectionRecord, Outcome
from agentbox.egress.wire import record_to_json
from agentbox.errors import EgressError
from agentbox.images.store import ImageStore
from agentbox.model.progress import CancelToken
from agentbox.provision.refresh import is_refresh
from agentbox.services.context import ServiceContext
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.services.egress_runner import EgressHealth
from agentbox.tui.app import AgentboxApp
from agentbox.tui.terminal import TuiOptions
from agentbox.tui.views import RecentEvents, load_details


class _Guest:
    def wait_until_ready(self, **_: object) -> None:
        pass

    def run_command(self, *, argv, stdout, **_: object) -> int:  # type: ignore[no-untyped-def]
        if list(argv[:2]) == ["cloud-init", "status"]:
            stdout(b"status: done\n")
        elif is_refresh(argv):
            stdout(f"{time.time():.6f}\n".encode())
        return 0


class _Egress:
    def ensure_running(self, **_: object) -> None:
        pass

    def stop(self, **_: object) -> None:
        pass

    def hold_through_power_cycle(self, **_: object) -> None:
        pass

    def health(self, **_: object) -> EgressHealth:
        return EgressHealth(proxy_running=True, forward_connected=True, supervised=True)

    def set_policy(self, *, files, policy):  # type: ignore[no-untyped-def]
        save_policy_file(path=files.policy, policy=policy)
        return PolicyChange(policy=policy, cut=0)

    def approvals(self, **_: object):  # type: ignore[no-untyped-def]
        raise EgressError("no approvals in the benchmark")


def services_with(count: int, root: Path):  # type: ignore[no-untyped-def]
    disk = root / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1G"], check=True)
    paths = AppPaths.under(root=root / "agentbox")
    paths.user_templates_dir.mkdir(parents=True)
    (paths.user_templates_dir / "tiny.yaml").write_text(
        f"name: tiny\ndescription: bench\nimage:\n  url: file://{disk}\n"
        f"  sha256: {hashlib.sha256(disk.read_bytes()).hexdigest()}\n")
    settings = Settings(libvirt_uri="fake:///", storage_dir=root / "storage", image_dir=root / "images",
                        default_template="tiny")
    ctx = ServiceContext(paths=paths, settings=settings, backend=FakeBackend(owner="bench"),
                         catalogue=TemplateCatalogue(builtin_dir=builtin_templates_dir(),
                                                     user_dir=paths.user_templates_dir),
                         images=ImageStore(image_dir=settings.image_dir), guest=_Guest(),  # type: ignore[arg-type]
                         fragments_dir=fragments_dir(), owner="bench", egress=_Egress())  # type: ignore[arg-type]
    for index in range(count):
        create_workspace(ctx=ctx, request=CreateRequest(name=f"ws{index:02d}"), on_progress=lambda _: None,
                         cancel=CancelToken())
    return build_services(ctx=ctx), ctx  # the context: what the benchmark looks at behind the facade


async def measure(services, *, count: int, presses: int) -> tuple[float, list[float]]:  # type: ignore[no-untyped-def]
    app = AgentboxApp(services=services, options=TuiOptions(refresh_s=3600))
    started = time.perf_counter()
    async with app.run_test(size=(120, 40)) as pilot:
        from textual.widgets import DataTable  # noqa: PLC0415 - only where Textual runs

        def details() -> str:
            """The details pane as drawn on the screen (what a person would read)."""
            region = app.screen.query_one("#details").region
            lines = [strip.text for strip in app.screen._compositor.render_strips()]
            return "\n".join(line[region.x:region.right] for line in lines[region.y:region.bottom])

        while app.screen.query(DataTable).first().row_count < count or "ws00" not in details():
            await pilot.pause(0.005)
        first_frame = time.perf_counter() - started
        latencies = []
        for index in range(1, presses + 1):
            pressed = time.perf_counter()
            await pilot.press("down")
            while f"ws{index:02d}" not in details():
                await pilot.pause(0.002)
            latencies.append(time.perf_counter() - pressed)
        return first_frame, latencies


def busy_logs(ctx, *, name: str, count: int) -> None:  # type: ignore[no-untyped-def]
    """`count` egress decisions after the workspace's lifecycle records, as a busy agent leaves
    them: in the decision trail (through its appender, which rotates it) and in the audit log (chained
    and rotated as the appender does it, without an fsync per record). The audit records that
    the details show are then all behind the decisions: the worst case for finding them."""
    trail = decision_trail(path=ctx.records.files(name=name).net_log)
    path = ctx.paths.audit_log(name)
    [last] = tail_records(path=path, count=1)
    seq, prev, size = last.seq, last.digest, path.stat().st_size
    log = path.open("ab")
    try:
        for index in range(count):
            record = ConnectionRecord(time=f"2025-01-01T00:{index // 60000 % 60:02d}:00.000+00:00", host="pypi.org",
                                      address="151.101.0.223", port=443, method="CONNECT",
                                      decision=Decision(True, "pypi.org", "on the allowlist"),
                                      outcome=Outcome.COMPLETED, bytes_up=1200, bytes_down=48000, duration_s=0.4)
            trail.append(event=DECISION_EVENT, details=record_to_json(record))
            if size >= ROTATE_BYTES:
                log.close()
                path.rename(next_segment(path))
                log, size = path.open("ab"), 0
            seq += 1
            line = encode_record(seq=seq, ts=last.ts, event="network.decision", details=record_to_json(record),
                                 prev=prev)
            log.write(line + b"\n")
            size += len(line) + 1
            prev = hashlib.sha256(line).hexdigest()
    finally:
        log.close()


def measure_details(services, ctx, *, refreshes: int) -> tuple[float, list[float], float]:  # type: ignore[no-untyped-def]
    """One details load with nothing remembered, then the refreshes that follow it; and, to
    compare, one full read of the audit log (what each refresh did before)."""
    [workspace] = services.workspaces.list()
    recent = RecentEvents()
    started = time.perf_counter()
    details = load_details(services=services, workspace=workspace, recent=recent)
    first = time.perf_counter() - started
    assert details.recent_events and details.recent_decisions, details
    times = []
    for _ in range(refreshes):
        started = time.perf_counter()
        again = load_details(services=services, workspace=workspace, recent=recent)
        times.append(time.perf_counter() - started)
        assert again.recent_events == details.recent_events
    started = time.perf_counter()
    for _ in read_records(path=ctx.paths.audit_log(workspace.name)):
        pass
    return first, times, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspaces", type=int, default=50)
    parser.add_argument("--presses", type=int, default=30)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--refreshes", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agentbox-bench-tui-") as tmp:
        services, _ = services_with(args.workspaces, Path(tmp))
        first, latencies = asyncio.run(measure(services, count=args.workspaces,
                                               presses=min(args.presses, args.workspaces - 1)))
    print(f"TUI on the Fake backend, {args.workspaces} workspaces, 120x40 (headless)")
    print(f"  first full frame (all rows + details): {first * 1000:.0f} ms")
    print(f"  key press to screen (cursor down → next details), {len(latencies)} presses: "
          f"median {statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")

    with tempfile.TemporaryDirectory(prefix="agentbox-bench-tui-") as tmp:
        services, ctx = services_with(1, Path(tmp))
        busy_logs(ctx, name="ws00", count=args.records)
        audit = ctx.paths.audit_log("ws00")
        chain = verify_chain(path=audit)
        assert chain.intact, chain.first_break
        net = sorted(ctx.records.files(name="ws00").net_log.parent.glob("net.jsonl*"))
        first, times, full = measure_details(services, ctx, refreshes=args.refreshes)
    print(f"Details refresh of one workspace, {args.records:,} audit and {args.records:,} network records "
          f"(audit: {len(chain.files)} files, network: {len(net)} files kept)")
    print(f"  first load (finds the recent events behind all the decisions): {first * 1000:.1f} ms")
    print(f"  refresh, median of {len(times)}: {statistics.median(times) * 1000:.1f} ms "
          f"(max {max(times) * 1000:.1f} ms); goal < 50 ms")
    print(f"  for comparison, one full read of the audit log: {full * 1000:.0f} ms")


if __name__ == "__main__":
    main()
