"""The .deb: built by packaging/deb/build.sh, installed with apt into a clean Debian 12 root
(debootstrap, cached), used there, purged without a trace; and its polkit rule, checked by
a real polkitd."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agentbox import __version__
from tests.packaging.chroot import DebianRoot, fresh_root, run
from tests.packaging.test_completion import PRINT_SUBCOMMANDS

REPO = Path(__file__).resolve().parents[2]
# Written by apt/dpkg on every run whatever is installed, or by our own test setup.
VOLATILE = ("/proc", "/tmp", "/var/log", "/var/cache/apt", "/var/lib/apt", "/var/cache/debconf")
RULE = "/usr/share/polkit-1/rules.d/50-agentbox-libvirt.rules"


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [tool for tool in ("dpkg-deb", "dpkg-shlibdeps", "debootstrap", "chroot") if not shutil.which(tool)]
    assert not missing, f"missing {missing}: run scripts/setup.sh (it installs dpkg-dev and debootstrap)"
    assert os.geteuid() == 0, "the .deb test needs root (debootstrap, chroot, apt)"
    out = tmp_path_factory.mktemp("deb")
    result = run(["bash", REPO / "packaging/deb/build.sh", out], timeout=1200)
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.is_file() and path.parent == out, result.stdout
    return path


@pytest.fixture(scope="module")
def debian(tmp_path_factory: pytest.TempPathFactory, deb: Path) -> Iterator[DebianRoot]:
    """A clean root with the .deb's dependencies installed by apt from its own Depends field."""
    with fresh_root(tmp_path_factory.mktemp("debian")) as root:
        depends = run(["dpkg-deb", "--field", deb, "Depends"]).stdout.strip()
        root.apt("update")
        root.apt("satisfy", depends)
        shutil.copy2(deb, root / "tmp" / deb.name)
        yield root
        root.prune_apt_cache()


def test_deb_installs_with_apt_works_and_purges_without_a_trace(debian: DebianRoot, deb: Path) -> None:
    before = debian.files(skip=VOLATILE)
    installed = debian.apt("install", f"/tmp/{deb.name}")
    assert "Setting up agentbox" in installed.stdout
    assert "0 upgraded, 1 newly installed" in installed.stdout, \
        "apt installed more than the package: `apt-get satisfy` of its Depends field missed something"

    assert debian.run("agentbox", "--version").stdout.strip() == f"agentbox {__version__}"
    listing = debian.run("agentbox", "template", "list").stdout
    assert "debian-12" in listing and "ubuntu-24.04" in listing
    doctor = debian.run("agentbox", "doctor", check=False)
    assert doctor.returncode in (0, 1) and "qemu-img: /usr/bin/qemu-img" in doctor.stdout, doctor
    # Completion and man page are there and know every command of this version's parser.
    commands = debian.run("/usr/lib/agentbox/bin/python", "-B", "-c", PRINT_SUBCOMMANDS).stdout.split()
    assert "template" in commands and "completion" in commands
    loaded = debian.run("bash", "-c", "source /usr/share/bash-completion/completions/agentbox && complete -p agentbox")
    assert "_shtab_agentbox agentbox" in loaded.stdout
    for path in ("/usr/share/zsh/vendor-completions/_agentbox", "/usr/share/fish/vendor_completions.d/agentbox.fish"):
        assert all(command in (debian / path).read_text() for command in commands), path
    manual = gzip.decompress((debian / "usr/share/man/man1/agentbox.1.gz").read_bytes()).decode()
    roff_names = [command.replace("-", "\\-") for command in commands]
    assert [name for name in roff_names if f"agentbox\\fR \\fI\\,{name}\\/" not in manual] == []
    assert (debian / RULE).is_file() and (debian / "usr/share/doc/agentbox/copyright").is_file()
    owned = [p for p in debian.run("dpkg", "-L", "agentbox").stdout.splitlines() if p not in ("/.", "/")]

    debian.run("apt-get", "purge", "-y", "-q", "agentbox")
    after = debian.files(skip=VOLATILE)
    assert sorted(after - before) == [], "left behind after purge"
    assert sorted(before - after) == [], "removed by purge though it was there before"
    still_there = [p for p in owned if os.path.lexists(debian / p) and not _owned_by_another(debian, p)]
    assert still_there == [], "files of the package still present after purge"


def _owned_by_another(root: DebianRoot, path: str) -> bool:
    return root.run("dpkg-query", "-S", path, check=False).returncode == 0


def test_polkit_rule_lets_the_libvirt_group_manage_libvirt_and_nothing_else(debian: DebianRoot, deb: Path) -> None:
    debian.run("dpkg", "-i", f"/tmp/{deb.name}")
    # Debian's libvirt ships an equivalent 60-libvirt.rules; set it aside to test ours alone.
    theirs = debian / "usr/share/polkit-1/rules.d/60-libvirt.rules"
    if theirs.exists():
        theirs.rename(debian / "tmp/60-libvirt.rules")
    for user, groups in (("member", ["-G", "libvirt"]), ("outsider", [])):
        if debian.run("id", user, check=False).returncode != 0:
            debian.run("useradd", "--no-create-home", *groups, user)
    with debian.proc_mounted(), _polkitd(debian) as authorized:
        assert authorized("member", "org.libvirt.unix.manage")
        assert not authorized("outsider", "org.libvirt.unix.manage")
        assert not authorized("member", "org.freedesktop.policykit.exec")  # pkexec: not granted
        (debian / RULE).rename(debian / "tmp/ours.rules")
        time.sleep(2)  # polkitd re-reads its rules when the directory changes
        assert not authorized("member", "org.libvirt.unix.manage"), "something other than our rule grants it"


@contextmanager
def _polkitd(root: DebianRoot) -> Iterator[Callable[[str, str], bool]]:
    """A system D-Bus and polkitd inside the root; yields authorized(user, action)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*argv: str) -> subprocess.Popen[bytes]:
        started.append(subprocess.Popen(["chroot", str(root.path), *argv], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))
        return started[-1]

    def has_owner(name: str) -> bool:
        reply = root.run("dbus-send", "--system", "--print-reply", "--dest=org.freedesktop.DBus", "/",
                         "org.freedesktop.DBus.NameHasOwner", f"string:{name}", check=False)
        return "boolean true" in reply.stdout

    def authorized(user: str, action: str) -> bool:
        # The subject is a process of `user`; polkitd looks its groups up in the root's /etc/group.
        subject = start("setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "sleep", "60")
        time.sleep(0.3)
        check = root.run("pkcheck", "--action-id", action, "--process", str(subject.pid), check=False)
        subject.terminate()
        assert check.returncode in (0, 1, 2), check  # 0: yes; 1: no; 2: only after authentication
        return check.returncode == 0

    (root / "run/dbus").mkdir(parents=True, exist_ok=True)
    try:
        start("dbus-daemon", "--system", "--nofork", "--nopidfile")
        _wait_for(lambda: has_owner("org.freedesktop.DBus"), "the system bus")
        # Started by us, not by bus activation, so that we know its pid and stop it.
        polkitd = start("/usr/lib/polkit-1/polkitd", "--no-debug")
        _wait_for(lambda: has_owner("org.freedesktop.PolicyKit1") or polkitd.poll() is not None, "polkitd")
        assert polkitd.poll() is None, "polkitd exited"
        yield authorized
    finally:
        for proc in reversed(started):
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for(ready: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
