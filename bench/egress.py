"""Egress in one run: how fast `agentbox net NAME off` is enforced (median of 20), and a
100 MiB download from a 127.0.0.1 server through the egress path (OpenSSH forward +
proxy) against the same download through a plain OpenSSH forward without the proxy.

Usage (root, libvirtd running): .venv/bin/python bench/egress.py
Every server is the benchmark's own, on the host's 127.0.0.1.
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from _env import bench_services

from agentbox.cli.main import main as cli
from agentbox.model.progress import CancelToken
from agentbox.services.create import CreateRequest, create_workspace

SIZE = 100 * 2**20
HOST = "web.agentbox.test"
PLAIN_PORT = 3130  # the guest end of the plain forward (3128: egress proxy, 3129: credential gateway)
ROUNDS = 3


class _Big(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        chunk = b"x" * 2**20
        self.send_response(200)
        self.send_header("Content-Length", str(SIZE))
        self.end_headers()
        for _ in range(SIZE // len(chunk)):
            self.wfile.write(chunk)

    def log_message(self, *_: object) -> None:
        pass


def guest_seconds(services, name: str, url: str, *curl_args: str) -> float:  # type: ignore[no-untyped-def]
    out = bytearray()
    code = services.workspaces.exec(name=name, argv=["curl", "-sS", *curl_args, "-o", "/dev/null", "-w",
                                                     "%{time_total} %{size_download}", url],
                                    stdout=out.extend, stderr=out.extend).exit_code
    seconds, size = out.decode().split()
    if code != 0 or int(size) != SIZE:
        raise SystemExit(f"download failed: {out.decode()}")
    return float(seconds)


def probe_refused(proxy_socket: str, port: int) -> bool:
    """One CONNECT through the proxy's socket: True if it is refused."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(proxy_socket)
        conn.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        return b" 200 " not in conn.recv(200)


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Big)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with bench_services(template="debian-12", egress_hosts={HOST: "127.0.0.1"}) as (services, ctx):
        create_workspace(ctx=ctx, request=CreateRequest(name="net", network="allowlist"),
                         on_progress=lambda _: None, cancel=CancelToken())
        services.network.allow(name="net", entry=f"127.0.0.1:{port}")
        proxy_socket = str(ctx.records.files(name="net").egress_dir / "proxy.sock")
        switch = []
        for _ in range(20):
            services.network.set_mode(name="net", mode="allowlist")
            assert not probe_refused(proxy_socket, port)
            started = time.monotonic()
            assert cli(["net", "net", "off"]) == 0
            refused = probe_refused(proxy_socket, port)
            switch.append(time.monotonic() - started)
            assert refused, "a connection after `net off` was let through"
        services.network.set_mode(name="net", mode="allowlist")
        config = ctx.records.files(name="net").ssh_config
        ssh = subprocess.Popen(["ssh", "-F", str(config), "-N", "-R", f"127.0.0.1:{PLAIN_PORT}:127.0.0.1:{port}",
                                "agentbox-net"])
        proxied_runs, plain_runs = [], []
        try:
            time.sleep(3)
            for _ in range(ROUNDS):  # interleaved, so a load change hits both paths alike
                proxied_runs.append(guest_seconds(services, "net", f"http://{HOST}:{port}/big"))
                plain_runs.append(guest_seconds(services, "net", f"http://127.0.0.1:{PLAIN_PORT}/big",
                                                "--noproxy", "*"))
        finally:
            ssh.terminate()
            ssh.wait()
        proxied, plain = statistics.median(proxied_runs), statistics.median(plain_runs)
    server.shutdown()
    print("`agentbox net NAME off` to enforcement (CLI call until the next connection is refused), 20 runs:")
    print(f"  median {statistics.median(switch) * 1000:.0f} ms, max {max(switch) * 1000:.0f} ms")
    print(f"100 MiB download from 127.0.0.1 into the guest (TCG), median of {ROUNDS} interleaved rounds:")
    print(f"  through the egress proxy   {SIZE / proxied / 2**20:8.1f} MiB/s ({proxied:.2f} s)")
    print(f"  plain SSH forward, no proxy {SIZE / plain / 2**20:7.1f} MiB/s ({plain:.2f} s)")
    print(f"  proxy / plain = {plain / proxied:.2f} (rounds: proxy "
          + ", ".join(f"{SIZE / s / 2**20:.1f}" for s in proxied_runs) + "; plain "
          + ", ".join(f"{SIZE / s / 2**20:.1f}" for s in plain_runs) + " MiB/s)")


if __name__ == "__main__":
    main()
