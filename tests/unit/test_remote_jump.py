"""SSH to a guest through a remote libvirt host (the jump), with real OpenSSH servers on
127.0.0.1: one plays the guest, one the libvirt host. Both agentbox's own client
(paramiko, direct-tcpip) and the egress forward's OpenSSH (ProxyCommand) go through it."""

from __future__ import annotations

import os
import pwd
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from agentbox.errors import GuestError, HostKeyMismatch, InvalidInput
from agentbox.model.remote_host import JumpHost, jump_host_of
from agentbox.provision.keys import generate_ed25519, write_private_key
from agentbox.remote.forward import hold_forward, read_state
from agentbox.remote.ssh import SshTarget, run_checked
from tests.sshd import SSHD, free_port, running_sshd
from tests.unit.test_remote_forward import EchoProxy, _through_forward, _wait_for

pytestmark = pytest.mark.skipif(not SSHD.exists(), reason="OpenSSH server not installed")


@dataclass(frozen=True)
class Hosts:
    guest: SshTarget  # with the jump
    jump_log: Path
    jump_host_key: str


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    root = tmp_path_factory.mktemp("jump")
    user = pwd.getpwuid(os.getuid()).pw_name
    client = generate_ed25519(comment="client")
    write_private_key(path=root / "client_ed25519", keypair=client)
    guest_key, jump_key = generate_ed25519(comment="guest"), generate_ed25519(comment="libvirt-host")
    guest_root, jump_root = root / "guest", root / "jump"
    guest_root.mkdir()
    jump_root.mkdir()
    guest_port, jump_port = free_port(), free_port()
    known_hosts = root / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{jump_port} {jump_key.public_openssh}\n")
    with running_sshd(root=guest_root, port=guest_port, host_key=guest_key, authorized_key=client.public_openssh), \
            running_sshd(root=jump_root, port=jump_port, host_key=jump_key,
                         authorized_key=client.public_openssh) as jump_log:
        jump = JumpHost(host="127.0.0.1", port=jump_port, user=user, key=root / "client_ed25519",
                        known_hosts=known_hosts)
        yield Hosts(guest=SshTarget(host="127.0.0.1", port=guest_port, user=user, private_key=root / "client_ed25519",
                                    host_key=guest_key.public_openssh, jump=jump),
                    jump_log=jump_log, jump_host_key=jump_key.public_openssh)


def test_the_uri_names_the_jump_host() -> None:
    jump = jump_host_of("qemu+ssh://root@far.example:2200/system?keyfile=/k&known_hosts=/kh&no_verify=1")
    assert jump == JumpHost(host="far.example", port=2200, user="root", key=Path("/k"), known_hosts=Path("/kh"))
    assert jump.destination == "root@far.example:2200"
    assert jump_host_of("qemu:///system") is None


def test_a_remote_uri_over_anything_but_ssh_is_refused() -> None:
    with pytest.raises(InvalidInput) as raised:
        jump_host_of("qemu+tcp://far.example/system")
    assert "over SSH only" in str(raised.value)


def test_commands_run_in_the_guest_through_the_jump_host(hosts: Hosts) -> None:
    logins = hosts.jump_log.read_text().count("Accepted publickey")
    assert run_checked(target=hosts.guest, argv=["echo", "through"]) == b"through\n"
    assert hosts.jump_log.read_text().count("Accepted publickey") == logins + 1


def test_a_jump_host_with_another_key_is_refused(hosts: Hosts, tmp_path: Path) -> None:
    assert hosts.guest.jump is not None
    other = tmp_path / "known_hosts"
    other.write_text(f"[127.0.0.1]:{hosts.guest.jump.port} {generate_ed25519(comment='x').public_openssh}\n")
    with pytest.raises(HostKeyMismatch):
        run_checked(target=replace(hosts.guest, jump=replace(hosts.guest.jump, known_hosts=other)), argv=["true"])


def test_a_jump_host_not_in_known_hosts_is_refused_with_a_hint(hosts: Hosts, tmp_path: Path) -> None:
    assert hosts.guest.jump is not None
    with pytest.raises(GuestError) as raised:
        run_checked(target=replace(hosts.guest, jump=replace(hosts.guest.jump, known_hosts=tmp_path / "none")),
                    argv=["true"])
    assert raised.value.hint and "known_hosts" in raised.value.hint


def test_the_egress_forward_goes_through_the_jump_host(hosts: Hosts, tmp_path: Path) -> None:
    proxy = EchoProxy(Path(f"/tmp/fwd-jump-{os.getpid()}.sock"))
    guest_port, stop = free_port(), threading.Event()
    state_file = tmp_path / "forward.state"
    logins = hosts.jump_log.read_text().count("Accepted publickey")
    holder = threading.Thread(target=hold_forward, kwargs={
        "target": hosts.guest, "proxy_socket": proxy.path, "state_file": state_file, "stop": stop,
        "guest_port": guest_port})
    holder.start()
    try:
        _wait_for(lambda: (state := read_state(path=state_file)) is not None and state.connected)
        assert _through_forward(guest_port, b"egress") == b"EGRESS"
        assert hosts.jump_log.read_text().count("Accepted publickey") == logins + 1
    finally:
        stop.set()
        holder.join(timeout=15)
        proxy.close()
        proxy.path.unlink(missing_ok=True)
