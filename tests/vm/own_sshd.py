"""An sshd of the tests' own on 127.0.0.1 (never the machine's): libvirt's real SSH
transport and agentbox's jump reach "the remote host" through it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote


@dataclass(frozen=True)
class OwnSshd:
    port: int
    pid: int
    client_key: Path
    known_hosts: Path

    @property
    def uri(self) -> str:
        # no_verify is for libvirt's own ssh only; agentbox's jump checks known_hosts.
        return (f"qemu+ssh://root@127.0.0.1:{self.port}/system?keyfile={quote(str(self.client_key))}"
                f"&no_verify=1&no_tty=1&known_hosts={quote(str(self.known_hosts))}")


def start_sshd(*, directory: Path) -> OwnSshd:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    host_key, client_key = directory / "host_ed25519", directory / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True,
                       capture_output=True)
    (directory / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    port = _free_port()
    config = directory / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
        "PermitRootLogin prohibit-password", f"AuthorizedKeysFile {directory / 'authorized_keys'}",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        "AllowTcpForwarding yes", f"PidFile {directory / 'sshd.pid'}", "LogLevel VERBOSE", "",
    ]))
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {Path(f'{host_key}.pub').read_text().split(' ')[0]} "
                           f"{Path(f'{host_key}.pub').read_text().split(' ')[1]}\n")
    log = (directory / "sshd.log").open("wb")
    process = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stdout=log, stderr=log,
                               stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"sshd did not start: {(directory / 'sshd.log').read_text()}") from None
            time.sleep(0.2)
    return OwnSshd(port=port, pid=process.pid, client_key=client_key, known_hosts=known_hosts)


def stop_sshd(sshd: OwnSshd) -> None:
    """By its PID only (it is our child: reaped here)."""
    try:
        os.kill(sshd.pid, signal.SIGTERM)
        os.waitpid(sshd.pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
