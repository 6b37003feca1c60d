"""The egress forward (agentbox.remote) against a real OpenSSH server on 127.0.0.1.

The "guest" here is a local sshd: the forward makes it listen on 127.0.0.1:GUEST_PORT and
relays what arrives there to a Unix socket standing in for the egress proxy, exactly as
it does into a workspace. The forward's own process is run as the supervisor runs it.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from agentbox.errors import HostKeyMismatch
from agentbox.host.process_identity import identity_of, is_alive
from agentbox.provision.keys import generate_ed25519, write_private_key
from agentbox.remote import forward
from agentbox.remote.forward import HOST_KEY_MISMATCH_EXIT, hold_forward, read_state
from agentbox.remote.ssh import SshTarget
from tests.sshd import SSHD, free_port, running_sshd

pytestmark = pytest.mark.skipif(
    not SSHD.exists(), reason="OpenSSH server not installed (apt-get install openssh-server)"
)


@dataclass(frozen=True)
class Guest:
    target: SshTarget
    root: Path


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    root = tmp_path_factory.mktemp("fwd")
    host_key = generate_ed25519(comment="guest-host")
    client_key = generate_ed25519(comment="client")
    write_private_key(path=root / "client_ed25519", keypair=client_key)
    port = free_port()
    with running_sshd(root=root, port=port, host_key=host_key, authorized_key=client_key.public_openssh):
        yield Guest(target=SshTarget(host="127.0.0.1", port=port, user=pwd.getpwuid(os.getuid()).pw_name,
                                     private_key=root / "client_ed25519", host_key=host_key.public_openssh),
                    root=root)


class EchoProxy:
    """A Unix-socket server that answers each connection with what it read, upper-cased."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._server = socket.socket(socket.AF_UNIX)
        self._server.bind(str(path))
        self._server.listen()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                conn.sendall(data.upper())

    def close(self) -> None:
        self._server.close()


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[EchoProxy]:
    server = EchoProxy(Path(f"/tmp/fwd-{os.getpid()}-{time.monotonic_ns()}.sock"))  # short: sun_path limit
    yield server
    server.close()
    server.path.unlink(missing_ok=True)


def _through_forward(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        return data


def _wait_for(condition, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_guest_connections_reach_the_proxy_and_the_state_says_connected(
        guest: Guest, proxy: EchoProxy, tmp_path: Path) -> None:
    guest_port, stop = free_port(), threading.Event()
    state_file = tmp_path / "forward.state"
    holder = threading.Thread(target=hold_forward, kwargs={
        "target": guest.target, "proxy_socket": proxy.path, "state_file": state_file, "stop": stop,
        "guest_port": guest_port})
    holder.start()
    try:
        _wait_for(lambda: (state := read_state(path=state_file)) is not None and state.connected)
        payload = os.urandom(3 << 20)  # several MiB, in both directions
        assert _through_forward(guest_port, payload) == payload.upper()
        assert _through_forward(guest_port, b"again") == b"AGAIN"  # one channel per connection
    finally:
        stop.set()
        holder.join(timeout=15)
    assert not holder.is_alive()
    state = read_state(path=state_file)
    assert state is not None and not state.connected and state.error == "stopped"
    assert not _listening(guest_port)  # stopped means nothing listens in the guest: no egress


def test_the_gateway_forward_rides_the_same_connection_and_connected_means_both(
        guest: Guest, proxy: EchoProxy, tmp_path: Path) -> None:
    gateway = EchoProxy(Path(f"/tmp/fwd-gw-{os.getpid()}-{time.monotonic_ns()}.sock"))
    proxy_port, gateway_port, stop = free_port(), free_port(), threading.Event()
    state_file = tmp_path / "forward.state"
    holder = threading.Thread(target=hold_forward, kwargs={
        "target": guest.target, "proxy_socket": proxy.path, "state_file": state_file, "stop": stop,
        "guest_port": proxy_port, "gateway_socket": gateway.path, "gateway_port": gateway_port})
    holder.start()
    try:
        _wait_for(lambda: (state := read_state(path=state_file)) is not None and state.connected)
        # Connected is written only once both forwards are up: both answer at once.
        assert _through_forward(gateway_port, b"to the gateway") == b"TO THE GATEWAY"
        assert _through_forward(proxy_port, b"to the proxy") == b"TO THE PROXY"
    finally:
        stop.set()
        holder.join(timeout=15)
        gateway.close()
        gateway.path.unlink(missing_ok=True)
    assert not _listening(gateway_port) and not _listening(proxy_port)


def test_a_host_key_other_than_the_pinned_one_is_refused(guest: Guest, proxy: EchoProxy, tmp_path: Path) -> None:
    impostor = replace(guest.target, host_key=generate_ed25519(comment="other").public_openssh)
    state_file = tmp_path / "forward.state"
    started = time.monotonic()
    with pytest.raises(HostKeyMismatch, match="not the pinned one"):
        hold_forward(target=impostor, proxy_socket=proxy.path, state_file=state_file, stop=threading.Event(),
                     guest_port=free_port())
    assert time.monotonic() - started < 15  # refused at once, not retried
    state = read_state(path=state_file)
    assert state is not None and not state.connected and "pinned" in state.error


def _forward_process(guest: Guest, proxy: EchoProxy, tmp_path: Path, guest_port: int,
                     host_key: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agentbox.remote", "--port", str(guest.target.port), "--user", guest.target.user,
         "--key", str(guest.target.private_key), "--host-key", host_key, "--proxy-socket", str(proxy.path),
         "--state-file", str(tmp_path / "forward.state"), "--pid-file", str(tmp_path / "forward.pid"),
         "--guest-port", str(guest_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def test_killing_the_holder_takes_the_ssh_and_the_guest_port_with_it(
        guest: Guest, proxy: EchoProxy, tmp_path: Path) -> None:
    guest_port = free_port()
    holder = _forward_process(guest, proxy, tmp_path, guest_port, guest.target.host_key)
    try:
        _wait_for(lambda: (state := read_state(path=tmp_path / "forward.state")) is not None and state.connected)
        assert _through_forward(guest_port, b"up") == b"UP"
        ssh = [identity_of(pid) for pid in _children(holder.pid)]
        assert ssh and all(ssh), "the forward runs OpenSSH as its child"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        _wait_for(lambda: not any(is_alive(identity) for identity in ssh), timeout_s=10)
        _wait_for(lambda: not _listening(guest_port), timeout_s=10)  # fail closed
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_the_process_exits_with_the_mismatch_code(guest: Guest, proxy: EchoProxy, tmp_path: Path) -> None:
    holder = _forward_process(guest, proxy, tmp_path, free_port(), generate_ed25519(comment="x").public_openssh)
    _, err = holder.communicate(timeout=30)
    assert holder.returncode == HOST_KEY_MISMATCH_EXIT, err.decode()


def test_after_a_drop_the_forward_retries_at_once_through_a_resets_power_cycle_then_backs_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reset's destroy and revert take seconds: a doubling delay had the forward come back
    well after the guest, and the reset waited for it. Scripted runs and a scripted clock."""
    connected = [True] + [False] * 200  # up once, then the guest is gone for good
    now = [0.0]
    delays: list[float] = []

    class Run:
        def __init__(self, **_: object) -> None:
            self.was_connected, self.host_key_refused, self.error = connected.pop(0), False, "refused"

        def wait(self, *, stop: threading.Event) -> None:
            now[0] += 0.01  # a refused connect

    class Stop(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            delays.append(timeout or 0.0)
            now[0] += timeout or 0.0
            if now[0] > 120:
                self.set()
            return self.is_set()

    monkeypatch.setattr(forward, "_SshRun", Run)
    monkeypatch.setattr(forward.time, "monotonic", lambda: now[0])
    hold_forward(target=SshTarget(host="127.0.0.1", port=1, user="agent", private_key=tmp_path / "key",
                                  host_key=generate_ed25519(comment="g").public_openssh),
                 proxy_socket=tmp_path / "proxy.sock", state_file=tmp_path / "forward.state", stop=Stop())
    quick = [d for d in delays if d == forward.RETRY_S]
    # Every retry in the window after the drop is immediate, so a guest back after 5 s is
    # reconnected within RETRY_S of it; after the window the delay doubles up to its cap.
    assert len(quick) >= forward.QUICK_RETRY_WINDOW_S / (forward.RETRY_S + 0.01) - 1
    assert delays[:len(quick)] == quick
    later = delays[len(quick):]
    assert later[:3] == [forward.RETRY_S * 2, forward.RETRY_S * 4, forward.RETRY_S * 8]
    assert later[-1] == forward.MAX_RETRY_S
