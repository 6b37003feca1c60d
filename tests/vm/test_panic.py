"""The panic button against a real guest with a download running through the proxy: the
download is cut before the panic is over, the guest's RAM and disk are kept as they were at
that moment, and the workspace is clean afterwards with its network left off."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agentbox.cli.main import main
from agentbox.errors import NotFound
from agentbox.model.evidence import EvidenceIntegrity
from agentbox.model.network import NetworkMode

from .conftest import EGRESS_TEST_HOST, VmEnv, quiet, run_in


class _Stream(BaseHTTPRequestHandler):
    ended: list[float] = []  # when each download's connection was found closed

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        try:
            for index in range(3000):
                self.wfile.write(f"line {index}\n".encode())
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass
        _Stream.ended.append(time.time())

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture()
def stream_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def contains(path: Path, needle: bytes) -> bool:
    """Whether the (large) file holds `needle`, read a chunk at a time."""
    tail = b""
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 24):
            if needle in tail + chunk:
                return True
            tail = chunk[-len(needle):]
    return False


def test_panic_cuts_a_running_download_keeps_evidence_and_leaves_the_workspace_clean(
        vm_env: VmEnv, clean_workspace: str, monkeypatch: pytest.MonkeyPatch, stream_port: int,
        tmp_path: Path) -> None:
    name = clean_workspace
    vm_env.cli_env(monkeypatch)
    services = vm_env.services()
    mode_before = services.network.policy(name=name).mode
    assert main(["net", name, "allowlist"]) == 0
    assert main(["net", "allow", name, f"127.0.0.1:{stream_port}"]) == 0
    _Stream.ended.clear()
    code, out, err = run_in(vm_env, name, "sh", "-c",
                            "echo DISK-CANARY-4711 > /home/agent/canary && sync && "
                            "echo MEM-CANARY-$((4700+11))-$((1000+234)) > /dev/shm/canary && "
                            f"(setsid curl -sS -N -m 300 http://{EGRESS_TEST_HOST}:{stream_port}/ > /tmp/dl 2>&1 &);"
                            " sleep 3; wc -l < /tmp/dl")
    assert code == 0 and int(out.split()[-1]) > 3, err  # the download is flowing
    started = time.time()
    try:
        outcome = services.panic.panic(name=name, on_progress=quiet)
    finally:
        if services.network.policy(name=name).mode is not mode_before:
            services.network.set_mode(name=name, mode=mode_before.value)
    finished = started + outcome.clean_s
    print(f"panic: cut after {outcome.cut_s:.2f} s, clean after {outcome.clean_s:.1f} s; "
          f"download closed after {(_Stream.ended or [float('nan')])[0] - started:.2f} s")
    assert _Stream.ended and _Stream.ended[0] < finished  # cut while the panic ran, not by its reset

    evidence = outcome.evidence
    assert evidence is not None and evidence.memory is not None and evidence.disk is not None, evidence
    memory, disk = Path(evidence.memory.path), Path(evidence.disk.path)
    assert memory.read_bytes()[:4] == b"\x7fELF"
    assert contains(memory, b"MEM-CANARY-4711-1234")  # the guest's RAM as it was (a tmpfs file)
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(disk), str(raw)], check=True, capture_output=True)
    shown = subprocess.run(["debugfs", "-R", "cat /home/agent/canary", str(raw)], check=True,
                           capture_output=True, text=True).stdout
    assert shown.strip() == "DISK-CANARY-4711"  # and its disk
    raw.unlink()
    assert services.panic.verify_evidence(name=name, evidence_id=evidence.id).integrity is EvidenceIntegrity.MATCHES

    code, out, _ = run_in(vm_env, name, "sh", "-c", "test -e /home/agent/canary && echo still-there || echo clean")
    assert out.strip() == "clean"  # the reset happened
    events = [r.event for r in services.audit.records(name=name)]
    assert events.index("panic") < events.index("panic.evidence") < len(events) - events[::-1].index("reset") - 1
    assert services.audit.verify(name=name).intact

    inspect = f"{name}-look"  # the evidence booted again, for inspection
    try:
        assert main(["evidence", name, "--restore", evidence.id[:10], "--as", inspect]) == 0
        code, out, err = run_in(vm_env, inspect, "cat", "/home/agent/canary")
        assert (code, out.strip()) == (0, "DISK-CANARY-4711"), err  # its disk, logged into with its own keys
        code, out, _ = run_in(vm_env, inspect, "sh", "-c",
                              f"curl -sS -m 10 http://{EGRESS_TEST_HOST}:{stream_port}/ 2>&1; "
                              f"curl -sS -m 5 --noproxy '*' http://10.0.2.2:{stream_port}/ 2>&1 && echo DIRECT-OK")
        assert "line 0" not in out and "DIRECT-OK" not in out, out  # no way out, through the proxy or around it
        assert main(["net", inspect, "open"]) != 0  # and it cannot be switched on
        assert services.network.policy(name=inspect).mode is NetworkMode.OFF
        events = [r.event for r in services.audit.records(name=inspect)]
        assert "evidence.restored" in events
    finally:
        try:
            services.workspaces.destroy(name=inspect, on_progress=quiet)
        except NotFound:
            pass  # the restore failed and left nothing
    assert services.panic.verify_evidence(name=name, evidence_id=evidence.id).integrity is EvidenceIntegrity.MATCHES
    assert "evidence.restored" in [r.event for r in services.audit.records(name=name)]
    services.panic.remove_evidence(name=name, evidence_id=evidence.id)
    assert not memory.exists() and not disk.exists()


def test_panic_leaves_the_network_off_after_the_reset(vm_env: VmEnv, clean_workspace: str) -> None:
    services = vm_env.services()
    mode_before = services.network.policy(name=clean_workspace).mode
    try:
        outcome = services.panic.panic(name=clean_workspace, on_progress=quiet)
        assert services.network.policy(name=clean_workspace).mode is NetworkMode.OFF
        code, out, _ = run_in(vm_env, clean_workspace, "curl", "-sS", "-m", "10", f"http://{EGRESS_TEST_HOST}:1/")
        assert "network mode is off" in out  # the proxy's refusal, after the reset too
    finally:
        services.network.set_mode(name=clean_workspace, mode=mode_before.value)
    if outcome.evidence is not None:
        services.panic.remove_evidence(name=clean_workspace, evidence_id=outcome.evidence.id)
