"""Decisions per second: the real egress proxy process (`python -m agentbox.egress`, mode
off, on its Unix socket) refusing short CONNECTs from 8 clients at once, each refusal a
record in the decision trail (`net.jsonl`, hash-chained) and in the audit log (fsync'd);
then how long after the last answer every decision is on disk.

Usage: .venv/bin/python bench/decisions.py [CONNECTIONS]   (no root, no VM; default 2000)
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import agentbox

REPO = Path(agentbox.__file__).resolve().parents[1]  # the proxy runs the code this script imports
CLIENTS = 8


def refuse(sock_path: Path, count: int) -> None:
    for _ in range(count):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(sock_path))
            sock.sendall(b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n\r\n")
            while sock.recv(65536):
                pass


def lines(path: Path) -> int:
    return sum(1 for _ in path.open("rb")) if path.exists() else 0


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with tempfile.TemporaryDirectory(prefix="agentbox-bench-") as tmp:
        work = Path(tmp)
        (work / "policy.json").write_text(json.dumps({"mode": "off", "allowlist": []}))
        net, audit = work / "net.jsonl", work / "audit.jsonl"
        proxy = subprocess.Popen(
            [sys.executable, "-m", "agentbox.egress", "--proxy-socket", str(work / "p.sock"), "--control-socket",
             str(work / "c.sock"), "--policy-file", str(work / "policy.json"), "--log-file", str(net),
             "--pid-file", str(work / "pid"), "--audit-log", str(audit)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while not (work / "pid").exists():
                time.sleep(0.02)
            started = time.perf_counter()
            threads = [threading.Thread(target=refuse, args=(work / "p.sock", total // CLIENTS))
                       for _ in range(CLIENTS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            answered = time.perf_counter() - started
            done = total // CLIENTS * CLIENTS
            while lines(net) < done or lines(audit) < done:
                time.sleep(0.01)
            written = time.perf_counter() - started
        finally:
            proxy.send_signal(signal.SIGTERM)
            proxy.wait(timeout=60)
    print(f"{done} refused connections, {CLIENTS} clients")
    print(f"answered:            {done / answered:8.0f} decisions/s ({answered:.2f} s)")
    print(f"all on disk after:   {written:8.2f} s ({done / written:.0f} decisions/s into both logs)")


if __name__ == "__main__":
    main()
