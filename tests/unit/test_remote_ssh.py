"""agentbox.remote.ssh against a real OpenSSH server on 127.0.0.1 (not a mock).

The server is started per module from a temporary sshd_config, with a host key and an
authorized key made by agentbox.provision.keys, so these tests also prove that OpenSSH
and paramiko accept the keys agentbox generates.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from agentbox.errors import BackendError, Cancelled, GuestError, HostKeyMismatch
from agentbox.model.progress import CancelToken, Progress
from agentbox.provision.keys import KeyPair, generate_ed25519, write_private_key
from agentbox.remote import ssh
from agentbox.remote.ssh import SshTarget, run_checked, run_command, wait_until_ready
from tests.sshd import SSHD, free_port, running_sshd


pytestmark = pytest.mark.skipif(
    not SSHD.exists(), reason="OpenSSH server not installed (apt-get install openssh-server)"
)


@dataclass(frozen=True)
class Server:
    target: SshTarget
    host_key: KeyPair
    log: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("sshd")
    host_key = generate_ed25519(comment="agentbox-test-host")
    client_key = generate_ed25519(comment="agentbox-test-client")
    write_private_key(path=root / "client_ed25519", keypair=client_key)
    port = free_port()
    with running_sshd(root=root, port=port, host_key=host_key, authorized_key=client_key.public_openssh) as log:
        target = SshTarget(
            host="127.0.0.1",
            port=port,
            user=pwd.getpwuid(os.getuid()).pw_name,
            private_key=root / "client_ed25519",
            host_key=host_key.public_openssh,
        )
        yield Server(target=target, host_key=host_key, log=log)


class Collect:
    def __init__(self) -> None:
        self.chunks: list[tuple[float, bytes]] = []

    def __call__(self, data: bytes) -> None:
        self.chunks.append((time.monotonic(), data))

    @property
    def data(self) -> bytes:
        return b"".join(chunk for _, chunk in self.chunks)


def _run(target: SshTarget, argv: list[str], **kwargs: object) -> tuple[int, bytes, bytes]:
    out, err = Collect(), Collect()
    status = run_command(target=target, argv=argv, stdout=out, stderr=err, **kwargs)  # type: ignore[arg-type]
    return status, out.data, err.data


# --- run_command -----------------------------------------------------------------------


def test_exit_status_zero(server: Server) -> None:
    assert _run(server.target, ["true"]) == (0, b"", b"")


def test_stdout_stderr_and_exit_status(server: Server) -> None:
    status, out, err = _run(server.target, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (status, out, err) == (3, b"out\n", b"err\n")


def test_argv_is_quoted_for_the_remote_shell(server: Server) -> None:
    status, out, _ = _run(server.target, ["printf", "%s|", "a b", "it's", "$HOME", "; true"])
    assert (status, out) == (0, b"a b|it's|$HOME|; true|")


def test_stdin_is_sent_then_closed(server: Server) -> None:
    payload = os.urandom(3 * 1024 * 1024)  # larger than the SSH window: sending must interleave
    status, out, _ = _run(server.target, ["cat"], stdin=payload)
    assert status == 0
    assert out == payload


def test_unread_stdin_is_dropped(server: Server) -> None:
    assert (
        _run(server.target, ["sh", "-c", "exit 5"], stdin=os.urandom(4 * 1024 * 1024), timeout_s=30)[0] == 5
    )


def test_no_stdin_means_end_of_file(server: Server) -> None:
    assert _run(server.target, ["cat"], timeout_s=10) == (0, b"", b"")


def test_output_is_streamed_as_it_arrives(server: Server) -> None:
    out = Collect()
    run_command(
        target=server.target,
        argv=["sh", "-c", "echo first; sleep 1; echo second"],
        stdout=out,
        stderr=Collect(),
    )
    finished = time.monotonic()
    assert out.data == b"first\nsecond\n"
    first_seen = next(at for at, chunk in out.chunks if b"first" in chunk)
    assert finished - first_seen > 0.5


def test_command_timeout(server: Server) -> None:
    started = time.monotonic()
    with pytest.raises(GuestError, match=r"did not finish within 0\.5 s"):
        _run(server.target, ["sleep", "10"], timeout_s=0.5)
    assert time.monotonic() - started < 5


def test_command_cancel(server: Server) -> None:
    cancel = CancelToken()
    threading.Timer(0.3, cancel.cancel).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        _run(server.target, ["sleep", "10"], cancel=cancel)
    assert time.monotonic() - started < 5


def test_run_checked(server: Server) -> None:
    assert run_checked(target=server.target, argv=["echo", "hi"]) == b"hi\n"
    with pytest.raises(GuestError) as info:
        run_checked(target=server.target, argv=["sh", "-c", "echo partial; echo 'it broke' >&2; exit 4"])
    assert "exited with status 4" in info.value.message
    assert "it broke" in info.value.message


# --- host key pinning ------------------------------------------------------------------


def test_host_key_mismatch_is_refused_at_once(server: Server) -> None:
    other = replace(server.target, host_key=generate_ed25519(comment="someone-else").public_openssh)
    started = time.monotonic()
    with pytest.raises(HostKeyMismatch) as info:
        wait_until_ready(target=other, timeout_s=60, cancel=CancelToken(), on_progress=lambda _: None)
    assert time.monotonic() - started < 5  # not retried until the timeout
    assert "does not match the pinned key: refusing to connect" in info.value.message
    assert "agentbox destroy" in (info.value.hint or "")
    with pytest.raises(HostKeyMismatch):
        _run(other, ["true"])


def test_pinned_key_comment_is_ignored(server: Server) -> None:
    kind, blob = server.host_key.public_openssh.split()[:2]
    assert _run(replace(server.target, host_key=f"{kind} {blob}"), ["true"])[0] == 0


def test_invalid_pinned_key(server: Server) -> None:
    with pytest.raises(GuestError, match="not a valid SSH public key"):
        _run(replace(server.target, host_key="ssh-ed25519 not-base64!"), ["true"])


# --- authentication --------------------------------------------------------------------


def test_wrong_client_key_is_an_auth_error(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ssh, "RETRY_INTERVAL_S", 0.05)
    write_private_key(path=tmp_path / "stranger", keypair=generate_ed25519(comment="stranger"))
    stranger = replace(server.target, private_key=tmp_path / "stranger")
    with pytest.raises(GuestError, match="refused the workspace's SSH key") as info:
        _run(stranger, ["true"])
    assert not isinstance(info.value, HostKeyMismatch)
    rounds: list[Progress] = []
    with pytest.raises(GuestError, match="refused the workspace's SSH key"):
        wait_until_ready(target=stranger, timeout_s=60, cancel=CancelToken(), on_progress=rounds.append)
    assert len(rounds) == ssh.AUTH_ATTEMPTS  # retried a few times, then given up


def test_missing_client_key(server: Server, tmp_path: Path) -> None:
    with pytest.raises(GuestError, match="is missing"):
        _run(replace(server.target, private_key=tmp_path / "nope"), ["true"])


# --- wait_until_ready ------------------------------------------------------------------


def test_wait_until_ready_succeeds(server: Server) -> None:
    seen: list[Progress] = []
    alive_checks: list[bool] = []
    wait_until_ready(
        target=server.target,
        timeout_s=30,
        cancel=CancelToken(),
        on_progress=seen.append,
        check_alive=lambda: alive_checks.append(True),
    )
    assert seen
    assert seen[-1].fraction == 1.0
    assert alive_checks


def _dead_target(server: Server) -> SshTarget:
    return replace(server.target, port=free_port())


def test_nothing_listening_times_out(server: Server) -> None:
    started = time.monotonic()
    with pytest.raises(GuestError, match=r"did not answer SSH .* within 1\.5 s") as info:
        wait_until_ready(
            target=_dead_target(server), timeout_s=1.5, cancel=CancelToken(), on_progress=lambda _: None
        )
    elapsed = time.monotonic() - started
    assert 1.4 <= elapsed < 5
    assert info.value.hint


def test_accept_then_close_is_retried(server: Server) -> None:
    # What QEMU's hostfwd does while the guest's sshd is not up yet.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        rounds: list[Progress] = []
        with pytest.raises(GuestError, match="did not answer SSH") as info:
            wait_until_ready(
                target=replace(server.target, port=port),
                timeout_s=2,
                cancel=CancelToken(),
                on_progress=rounds.append,
            )
        assert not isinstance(info.value, HostKeyMismatch)
        assert len(rounds) >= 2
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_check_alive_stops_the_wait(server: Server) -> None:
    def died() -> None:
        raise BackendError("the VM stopped")

    started = time.monotonic()
    with pytest.raises(BackendError, match="the VM stopped"):
        wait_until_ready(
            target=_dead_target(server),
            timeout_s=60,
            cancel=CancelToken(),
            on_progress=lambda _: None,
            check_alive=died,
        )
    assert time.monotonic() - started < 2


def test_check_alive_is_called_every_round(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssh, "RETRY_INTERVAL_S", 0.05)
    calls = 0

    def alive() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise BackendError("the VM stopped")

    with pytest.raises(BackendError):
        wait_until_ready(
            target=_dead_target(server),
            timeout_s=60,
            cancel=CancelToken(),
            on_progress=lambda _: None,
            check_alive=alive,
        )
    assert calls == 3


def test_cancel_stops_the_wait(server: Server) -> None:
    cancel = CancelToken()
    threading.Timer(0.3, cancel.cancel).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        wait_until_ready(target=_dead_target(server), timeout_s=60, cancel=cancel, on_progress=lambda _: None)
    assert time.monotonic() - started < 3


# --- keys from agentbox.provision.keys -------------------------------------------------


def test_generated_keys_work_with_openssh_and_paramiko(server: Server) -> None:
    # The fixture's sshd serves a host key from generate_ed25519 (OpenSSH accepted it), and
    # paramiko authenticated with a client key from it; the pinned line matched.
    assert run_checked(target=server.target, argv=["echo", "ok"]) == b"ok\n"


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")
def test_ssh_keygen_derives_the_pinned_host_key(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "host"
    write_private_key(path=path, keypair=server.host_key)
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(path)], capture_output=True, text=True, check=True
    )
    assert derived.stdout.split()[:2] == server.target.host_key.split()[:2]
