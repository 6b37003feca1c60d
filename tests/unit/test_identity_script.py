"""The clone's identity script (provision/identity.py), run by this host's Perl against a
temporary root: the same code the guest runs, its paths moved under tmp_path, its
sethostname left out (it would rename this host) and sshd played by a small listener that
binds anew on SIGHUP, as sshd does on its reload."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentbox.model.guest import GUEST_USER
from agentbox.provision.guest_changes import CLEAN_MARK, MARK_DIR
from agentbox.provision.identity import GOLDEN_HOSTNAME, IDENTITY_PERL, identity_input
from agentbox.provision.keys import generate_ed25519
from agentbox.provision.refresh import refresh_input

pytestmark = pytest.mark.skipif(shutil.which("perl") is None, reason="perl is not installed")

# sshd's stand-in: listens on 127.0.0.1 and ::1 (IPv6 only, as sshd sets it), and on SIGHUP
# closes both and binds anew, IPv6 at once and IPv4 `delay` seconds later, as a reloading
# sshd may ("never": IPv4 does not come back).
_SSHD = """
import signal, socket, sys, time
def listen(family, host):
    s = socket.socket(family)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((host, int(sys.argv[1]))); s.listen(); return s
v4, v6 = listen(socket.AF_INET, "127.0.0.1"), listen(socket.AF_INET6, "::1")
signal.signal(signal.SIGHUP, lambda *a: None)
print("ready", flush=True)
signal.pause()
v4.close(); v6.close()
v6 = listen(socket.AF_INET6, "::1")
if sys.argv[2] != "never":
    time.sleep(float(sys.argv[2])); v4 = listen(socket.AF_INET, "127.0.0.1")
time.sleep(30)
"""


def _script(root: Path, port: int) -> str:
    moved = IDENTITY_PERL
    for path in ("/etc/", "/home/", "/run/", MARK_DIR):
        moved = moved.replace(path, f"{root}{path}")
    moved = moved.replace("syscall(170, $name, length($name)) == 0", "1")  # this host keeps its name
    moved = moved.replace(f'getpwnam("{GUEST_USER}")', f'getpwuid({os.getuid()})')
    return moved.replace(":0016$", f":{port:04X}$")


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    for folder in ("etc/ssh", f"home/{GUEST_USER}/.ssh", "run", MARK_DIR.lstrip("/")):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    (tmp_path / "etc/ssh/ssh_host_ed25519_key").write_text("golden private\n")
    (tmp_path / "etc/ssh/ssh_host_rsa_key.pub").write_text("golden rsa\n")
    (tmp_path / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {GOLDEN_HOSTNAME}\n")
    (tmp_path / "etc/hostname").write_text(f"{GOLDEN_HOSTNAME}\n")
    (tmp_path / f"home/{GUEST_USER}/.ssh/authorized_keys").write_text("ssh-ed25519 AAAAbootstrap golden\n")
    return tmp_path


def _sshd(root: Path, delay: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sshd = subprocess.Popen([sys.executable, "-c", _SSHD, str(port), delay], stdout=subprocess.PIPE)
    assert sshd.stdout is not None and sshd.stdout.readline() == b"ready\n"
    (root / "run/sshd.pid").write_text(f"{sshd.pid}\n")
    try:
        yield port, sshd
    finally:
        sshd.send_signal(signal.SIGKILL)
        sshd.wait()


def _run(root: Path, port: int, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["perl", "-e", "use strict;\n{\n" + _script(root, port) + "\n}\n"], input=stdin,
                          capture_output=True, timeout=30, check=False)


def test_the_clone_gets_its_keys_and_name_and_the_script_returns_once_sshd_listens_again(root: Path) -> None:
    host, client = generate_ed25519(comment="new-host"), generate_ed25519(comment="workspace")
    stdin = identity_input(hostname="ws1", authorized_key=client.public_openssh, host_key=host)
    for port, sshd in _sshd(root, delay="0.3"):
        done = _run(root, port, stdin[len(refresh_input()):])
        assert done.returncode == 0, done.stderr
        # It returned after the stand-in bound its new IPv4 socket (QEMU's user net connects
        # over IPv4), not once the IPv6 one was back: a login now is not refused.
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        assert sshd.poll() is None
    ssh = root / "etc/ssh"
    assert sorted(p.name for p in ssh.iterdir()) == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]
    assert (ssh / "ssh_host_ed25519_key").read_text() == host.private_openssh.rstrip("\n") + "\n"
    assert (ssh / "ssh_host_ed25519_key").stat().st_mode & 0o777 == 0o600
    assert (ssh / "ssh_host_ed25519_key.pub").read_text() == host.public_openssh + "\n"
    keys = root / f"home/{GUEST_USER}/.ssh/authorized_keys"
    assert keys.read_text() == client.public_openssh + "\n"  # the bootstrap key is gone
    assert keys.stat().st_mode & 0o777 == 0o600 and keys.stat().st_uid == os.getuid()
    assert (root / "etc/hostname").read_text() == "ws1\n"
    assert (root / "etc/hosts").read_text() == "127.0.0.1 localhost\n127.0.1.1 ws1\n"
    assert (root / CLEAN_MARK.lstrip("/")).exists()
    assert not list(root.rglob("*.agentbox"))


def test_an_sshd_that_does_not_listen_again_fails_the_identity_and_says_so(root: Path) -> None:
    host, client = generate_ed25519(comment="new-host"), generate_ed25519(comment="workspace")
    stdin = identity_input(hostname="ws1", authorized_key=client.public_openssh, host_key=host)
    for port, _ in _sshd(root, delay="never"):
        done = _run(root, port, stdin[len(refresh_input()):])
    assert done.returncode != 0
    assert b"sshd did not listen again within 5 s of its reload" in done.stderr
    assert not (root / CLEAN_MARK.lstrip("/")).exists()  # no clean marker: create cold boots instead


def test_cut_input_is_refused_before_anything_changes(root: Path) -> None:
    for port, _ in _sshd(root, delay="0"):
        done = _run(root, port, b"ws1\nssh-ed25519 AAAA\n")
    assert done.returncode != 0 and b"short input" in done.stderr
    assert (root / f"home/{GUEST_USER}/.ssh/authorized_keys").read_text() == "ssh-ed25519 AAAAbootstrap golden\n"
