"""A clean Debian 12 root for installing the .deb, made with debootstrap once and cached.

The debootstrapped root is kept as a tarball under CACHE_DIR (outside the checkout), named
by a hash of its recipe, so a change to the recipe makes a new one; every test session
extracts a fresh copy. Downloaded .debs are kept beside it and handed to apt in the next
root, so a warm run fetches only the package indices.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

CACHE_DIR = Path(os.environ.get("AGENTBOX_TEST_CACHE", "/var/cache/agentbox-tests"))
MIRROR = "http://deb.debian.org/debian"
RECIPE = {
    "suite": "bookworm",
    "variant": "minbase",
    "mirror": MIRROR,
    # What a Debian 12 user has enabled, so dependencies resolve as they would there.
    "sources": [f"deb {MIRROR} bookworm main", f"deb {MIRROR} bookworm-updates main",
                "deb http://deb.debian.org/debian-security bookworm-security main"],
    # Maintainer scripts must not start daemons (libvirtd, virtlogd) inside the chroot.
    "policy_rc_d": "#!/bin/sh\nexit 101\n",
}
# Changing only the environment, not the root, must not rebuild it.
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8",
           "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


def run(argv: Sequence[str | Path], *, timeout: float = 900, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run argv (never a shell); on failure the message carries the command's output."""
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                            env=env, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} exited {result.returncode}\n"
                             f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}")
    return result


def recipe_key() -> str:
    return hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:16]


def cached_root_tarball() -> Path:
    """The clean root as a tarball: from the cache, or debootstrapped now (about a minute)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tarball = CACHE_DIR / f"debian-{RECIPE['suite']}-{RECIPE['variant']}-{recipe_key()}.tar"
    with open(CACHE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two sessions at once: one builds, the other waits
        if tarball.is_file():
            return tarball
        work = CACHE_DIR / f"build-{recipe_key()}"
        remove_unless_mounted(work)
        root = work / "root"
        try:
            run(["debootstrap", f"--variant={RECIPE['variant']}", RECIPE["suite"], root, RECIPE["mirror"]],
                timeout=1800)
            (root / "etc/apt/sources.list").write_text("\n".join(RECIPE["sources"]) + "\n")
            policy = root / "usr/sbin/policy-rc.d"
            policy.write_text(RECIPE["policy_rc_d"])
            policy.chmod(0o755)
            run(["chroot", root, "apt-get", "clean"], env=APT_ENV)
            partial = tarball.with_suffix(".partial")
            run(["tar", "--numeric-owner", "-C", root, "-cf", partial, "."])
            partial.replace(tarball)
        finally:
            remove_unless_mounted(work)
    for old in CACHE_DIR.glob(f"debian-{RECIPE['suite']}-{RECIPE['variant']}-*.tar"):
        if old != tarball:
            old.unlink()  # an older recipe's root
    return tarball


class DebianRoot:
    """An extracted root: run commands in it with chroot, install with apt."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __truediv__(self, inside: str) -> Path:
        return self.path / inside.lstrip("/")

    def run(self, *argv: str | Path, timeout: float = 900, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return run(["chroot", self.path, *argv], timeout=timeout, check=check, env={**APT_ENV, **(env or {})})

    def apt(self, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
        """apt-get without recommends, with the cached .debs going in and new ones coming out."""
        archives = self / "var/cache/apt/archives"
        cache = CACHE_DIR / f"apt-archives-{RECIPE['suite']}"
        cache.mkdir(parents=True, exist_ok=True)
        for deb in cache.glob("*.deb"):
            if not (archives / deb.name).exists():
                shutil.copy2(deb, archives / deb.name)
        result = self.run("apt-get", "-y", "-q", "--no-install-recommends", *args, timeout=timeout)
        for deb in archives.glob("*.deb"):
            if not (cache / deb.name).exists():
                shutil.copy2(deb, cache / deb.name)
        return result

    def prune_apt_cache(self) -> None:
        """Keep only the .debs this root used, so superseded versions do not pile up."""
        used = {deb.name for deb in (self / "var/cache/apt/archives").glob("*.deb")}
        for deb in (CACHE_DIR / f"apt-archives-{RECIPE['suite']}").glob("*.deb"):
            if deb.name not in used:
                deb.unlink()

    def files(self, *, skip: Sequence[str]) -> set[str]:
        """Every path in the root, as seen from inside, except under the `skip` directories."""
        found: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(self.path):
            inside = "/" + os.path.relpath(dirpath, self.path).removeprefix(".").lstrip("/")
            dirnames[:] = [d for d in dirnames if _join(inside, d) not in skip]
            found.update(_join(inside, name) for name in (*dirnames, *filenames))
        return found

    @contextmanager
    def proc_mounted(self) -> Iterator[None]:
        target = self / "proc"
        run(["mount", "-t", "proc", "proc", target])
        try:
            yield
        finally:
            run(["umount", "--lazy", target])


def _join(parent: str, name: str) -> str:
    return f"{parent.rstrip('/')}/{name}"


@contextmanager
def fresh_root(parent: Path) -> Iterator[DebianRoot]:
    """A new copy of the clean root under `parent`, removed afterwards."""
    path = parent / "root"
    path.mkdir()
    try:
        run(["tar", "--numeric-owner", "-C", path, "-xpf", cached_root_tarball()])
        shutil.copy2("/etc/resolv.conf", path / "etc/resolv.conf")
        yield DebianRoot(path)
    finally:
        remove_unless_mounted(path)


def remove_unless_mounted(path: Path) -> None:
    """rm -rf, but never into a file system still mounted below `path` (a chroot's /proc)."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    if any(m == str(path) or m.startswith(f"{path}/") for m in mounts):
        raise AssertionError(f"still mounted under {path}; not removing it")
    shutil.rmtree(path, ignore_errors=True)
