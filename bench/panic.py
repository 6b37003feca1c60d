"""The panic button, timed in one run on one real workspace with a download running through
the proxy: from the panic to the network cut (as agentbox measures it, and as the download's
server sees its connection close), to the evidence kept, and to the workspace clean again.

Usage (root, libvirtd running): PYTHONPATH=. .venv/bin/python bench/panic.py
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from _env import bench_services

from agentbox.cli.main import main as cli
from agentbox.model.progress import CancelToken, Progress
from agentbox.services.create import CreateRequest, create_workspace

HOST = "web.agentbox.test"
NAME = "panic"
ROUNDS = 2


class _Stream(BaseHTTPRequestHandler):
    closed: list[float] = []

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"x" * 1024 + b"\n")
                self.wfile.flush()
                time.sleep(0.02)
        except OSError:
            _Stream.closed.append(time.monotonic())

    def log_message(self, *_: object) -> None:
        pass


def main() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Stream)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port = int(httpd.server_address[1])
    with bench_services(template="debian-12", egress_hosts={HOST: "127.0.0.1"}) as (services, ctx):
        create_workspace(ctx=ctx, request=CreateRequest(name=NAME, network="allowlist"),
                         on_progress=lambda _: None, cancel=CancelToken())
        rows = []
        for _ in range(ROUNDS):
            assert cli(["net", NAME, "allowlist"]) == 0
            assert cli(["net", "allow", NAME, f"127.0.0.1:{port}"]) == 0
            out = bytearray()
            download = f"(setsid curl -sS -N -m 600 http://{HOST}:{port}/ > /dev/null 2>&1 &); sleep 2"
            services.workspaces.exec(name=NAME, argv=["sh", "-c", download], stdout=out.extend, stderr=out.extend)
            _Stream.closed.clear()
            steps: dict[str, float] = {}
            started = time.monotonic()

            def note(progress: Progress, steps: dict[str, float] = steps, started: float = started) -> None:
                steps.setdefault(progress.step, time.monotonic() - started)

            outcome = services.panic.panic(name=NAME, on_progress=note)
            closed = (_Stream.closed[0] - started) if _Stream.closed else float("nan")
            kept = outcome.evidence.files if outcome.evidence else ()
            rows.append((outcome.cut_s, closed, steps.get("reset", float("nan")), outcome.clean_s,
                         sum(f.bytes for f in kept) / (1 << 20)))
            if outcome.evidence:
                services.panic.remove_evidence(name=NAME, evidence_id=outcome.evidence.id)
    httpd.shutdown()
    print("round  cut (agentbox)  download closed  evidence kept  clean   evidence size")
    for number, (cut, closed, kept_at, clean, size) in enumerate(rows, start=1):
        print(f"{number:>5}  {cut:>12.2f} s  {closed:>13.2f} s  {kept_at:>11.1f} s  {clean:>5.1f} s  {size:>9.0f} MiB")


if __name__ == "__main__":
    main()
