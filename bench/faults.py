"""Faults in one run, on one real workspace (network allowlist, one allowed 127.0.0.1 server):
for each fault, the seconds until the workspace is usable again (a curl from the guest through
the proxy to the allowed server succeeds) and whether egress stayed closed the whole time (a
second 127.0.0.1 server, never allowed, is probed from the guest every 0.2 s through the proxy
and directly via QEMU's 10.0.2.2 throughout, and must never see a request).

Faults: the egress proxy, the forward or the supervisor SIGKILLed; `agentbox reset` SIGKILLed
while it reverts; libvirtd restarted; a host restart simulated (supervisor killed, the domain
destroyed outside agentbox, libvirtd restarted). Recovery is what a user would do: nothing for
a helper or libvirtd, `agentbox start` after the supervisor or the host, the next `reset` after
a killed reset. libvirtd is restarted the way scripts/setup.sh started it.

Usage (root, libvirtd running): PYTHONPATH=. .venv/bin/python bench/faults.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from _env import bench_services

from agentbox.cli.main import main as cli
from agentbox.config.paths import ROOT_ENV
from agentbox.host.supervision_files import SupervisorFiles
from agentbox.model.progress import CancelToken
from agentbox.services.create import CreateRequest, create_workspace
from tests.vm.test_supervisor import restart_libvirtd

HOST = "web.agentbox.test"
NAME = "faults"


class _Counting(BaseHTTPRequestHandler):
    hits: list[float]

    def do_GET(self) -> None:
        type(self).hits.append(time.monotonic())
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *_: object) -> None:
        pass


def server(hits: list[float]) -> int:
    handler = type("Handler", (_Counting,), {"hits": hits})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return int(httpd.server_address[1])


def probe_loop(services, denied: int) -> None:  # type: ignore[no-untyped-def]
    """In the guest, in the background: the denied server through the proxy and directly."""
    loop = (f"while true; do curl -s -m 2 http://{HOST}:{denied}/; "
            f"curl -s -m 2 --noproxy '*' http://10.0.2.2:{denied}/; sleep 0.2; done")
    services.workspaces.exec(name=NAME, argv=["sh", "-c", f"nohup sh -c \"{loop}\" >/dev/null 2>&1 &"],
                             stdout=lambda _: None, stderr=lambda _: None)


def usable_after(services, allowed: int, started: float, timeout_s: float = 300.0) -> float:  # type: ignore[no-untyped-def]
    """Seconds from `started` until a curl from the guest reaches the allowed server."""
    while time.monotonic() - started < timeout_s:
        try:
            code = services.workspaces.exec(name=NAME, argv=["curl", "-sf", "-m", "5", f"http://{HOST}:{allowed}/"],
                                            stdout=lambda _: None, stderr=lambda _: None).exit_code
        except Exception:  # noqa: BLE001 - the guest or its SSH is not back yet
            code = -1
        if code == 0:
            return time.monotonic() - started
        time.sleep(0.2)
    raise SystemExit(f"not usable {timeout_s:.0f} s after the fault")


def helper(ctx, which: str):  # type: ignore[no-untyped-def]
    files = SupervisorFiles(egress_dir=ctx.records.files(name=NAME).egress_dir)
    if which == "supervisor":
        return files.supervisor()
    state = files.read_state()
    return getattr(state, which)


def kill_helper(ctx, which: str) -> None:  # type: ignore[no-untyped-def]
    identity = helper(ctx, which)
    if identity is None:
        raise SystemExit(f"no {which} runs")
    os.kill(identity.pid, signal.SIGKILL)


def kill_reset(ctx) -> None:  # type: ignore[no-untyped-def]
    child = subprocess.Popen([sys.executable, "-m", "agentbox", "reset", NAME], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, ROOT_ENV: str(ctx.paths.root)})
    assert child.stderr is not None
    for line in child.stderr:
        if line.startswith("[2/4] revert"):
            break
    child.kill()
    child.wait()


def main() -> None:
    allowed_hits: list[float] = []
    denied_hits: list[float] = []
    allowed, denied = server(allowed_hits), server(denied_hits)
    rows: list[tuple[str, float, bool, str]] = []
    with bench_services(template="debian-12", egress_hosts={HOST: "127.0.0.1"}) as (services, ctx):
        create_workspace(ctx=ctx, request=CreateRequest(name=NAME, network="allowlist"),
                         on_progress=lambda _: None, cancel=CancelToken())
        assert cli(["net", "allow", NAME, f"127.0.0.1:{allowed}"]) == 0
        usable_after(services, allowed, time.monotonic())
        domain = ctx.domain_name(name=NAME)
        start = ["start", NAME]
        faults = [
            ("egress proxy killed", lambda: kill_helper(ctx, "proxy"), None),
            ("forward killed", lambda: kill_helper(ctx, "forward"), None),
            ("supervisor killed", lambda: kill_helper(ctx, "supervisor"), start),
            ("reset killed while reverting", lambda: kill_reset(ctx), ["reset", NAME]),
            ("libvirtd restarted", restart_libvirtd, None),
            ("host restart (helpers killed, domain destroyed, libvirtd restarted)", lambda: (
                kill_helper(ctx, "supervisor"),
                subprocess.run(["virsh", "-c", "qemu:///system", "destroy", domain], check=True, capture_output=True),
                restart_libvirtd()), start),
        ]
        for label, inject, recovery in faults:
            probe_loop(services, denied)
            time.sleep(3)
            before = len(denied_hits)
            started = time.monotonic()
            inject()
            if recovery is not None:
                code = cli(recovery)
                if code != 0:
                    raise SystemExit(f"{label}: agentbox {' '.join(recovery)} exited {code}")
            took = usable_after(services, allowed, started)
            time.sleep(2)  # the probes go on a little after recovery too
            listed = {w.name: w.state.value for w in services.workspaces.list()}
            rows.append((label, took, len(denied_hits) == before, listed.get(NAME, "?")))
    width = max(len(r[0]) for r in rows)
    print(f"{'fault':<{width}}  usable again after  egress stayed closed  list says")
    for label, took, closed, state in rows:
        print(f"{label:<{width}}  {took:>17.1f} s  {'yes' if closed else 'NO':>20}  {state}")
    print(f"requests that reached the never-allowed server: {len(denied_hits)}")


if __name__ == "__main__":
    main()
