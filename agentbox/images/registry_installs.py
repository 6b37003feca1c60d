"""A layer's npm and pip installs, run in a chroot of the mounted image on the host.

After apt (which brings Debian's nodejs/npm and python3-venv), global npm packages go to
/usr/local (their bin files in /usr/local/bin), and each pip application gets a venv of its
own under /opt/agentbox/venvs with its entry points linked into /usr/local/bin. The
registries are reached from the host, through the host's proxy settings and trusting the
host's CA bundle (placed in the tree only while the installs run): the guest itself never
downloads anything. What was installed is read back from the written disk before the
image is cached (`check_readback`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from agentbox.errors import ImageError, ToolFailed
from agentbox.images.debian_build import build_env, inside
from agentbox.images.tools import remove_tree, run_tool
from agentbox.model.installs import NpmPackage, PipPackage
from agentbox.model.progress import CancelToken

NPM_APT = ("ca-certificates", "nodejs", "npm")  # Debian 12: Node 18, npm 9
PIP_APT = ("ca-certificates", "python3-venv")  # Debian 12: Python 3.11
VENV_ROOT = "/opt/agentbox/venvs"
NPM_ROOT = "/usr/local/lib/node_modules"
BIN_DIR = "/usr/local/bin"

_HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
_BUILD_CA = "/tmp/agentbox-build-ca.crt"  # in the tree, only while the installs run
_NPM_CACHE = "/tmp/agentbox-npm-cache"
# Run by the venv's own python: the distribution's version, its METADATA file and its
# console scripts, as JSON.
_PIP_FACTS = (
    "import importlib.metadata as m, json, sys\n"
    "d = m.distribution(sys.argv[1])\n"
    "meta = [str(d.locate_file(f)) for f in (d.files or ()) if f.name == 'METADATA']\n"
    "eps = sorted(e.name for e in d.entry_points if e.group == 'console_scripts')\n"
    "print(json.dumps({'version': d.version, 'metadata': meta, 'scripts': eps}))\n"
)


@dataclass(frozen=True)
class InstalledFiles:
    """What the installs put in the tree, as guest paths, for the read-back."""

    paths: tuple[str, ...]  # every one must exist on the written disk
    versions: tuple[tuple[str, str], ...]  # (npm package.json path, version it must name)
    commands: tuple[str, ...]  # the bin names now in /usr/local/bin


def implied_apt(*, npm: tuple[NpmPackage, ...], pip: tuple[PipPackage, ...]) -> frozenset[str]:
    """The Debian packages the installs need: part of the layer's apt list (and its key)."""
    return frozenset((NPM_APT if npm else ()) + (PIP_APT if pip else ()))


def install_from_registries(
    *,
    root: Path,
    npm: tuple[NpmPackage, ...],
    pip: tuple[PipPackage, ...],
    tools: Mapping[str, str],
    cancel: CancelToken,
    on_line: Callable[[str], None],
) -> InstalledFiles:
    proc = inside(root, "/proc")
    ca = inside(root, _BUILD_CA)
    resolv = inside(root, "/etc/resolv.conf")
    placed_resolv = False
    mounted = False
    try:
        # The base image has no resolv.conf (the guest gets its own): npm and pip need the host's.
        if not os.path.lexists(resolv):
            shutil.copyfile("/etc/resolv.conf", resolv)
            placed_resolv = True
        if _HOST_CA.is_file():
            shutil.copyfile(_HOST_CA, ca)
        # npm and node read /proc (CPU count, their own executable); unmounted below.
        proc.mkdir(exist_ok=True)
        run_tool([tools["mount"], "-t", "proc", "proc", str(proc)], cancel=cancel)
        mounted = True
        env = _env(has_ca=ca.is_file())
        npm_files = _install_npm(root=root, packages=npm, tools=tools, env=env, cancel=cancel, on_line=on_line)
        pip_files = [_install_pip(root=root, package=package, tools=tools, env=env, cancel=cancel, on_line=on_line)
                     for package in pip]
    finally:
        if mounted:
            try:
                run_tool([tools["umount"], str(proc)], cancel=CancelToken())
            except ToolFailed:
                pass  # remove_tree of the work dir unmounts lazily what is still mounted
        ca.unlink(missing_ok=True)
        if placed_resolv:
            resolv.unlink(missing_ok=True)
        for leftover in (_NPM_CACHE, "/root/.npm", "/root/.cache"):
            remove_tree(inside(root, leftover))
    parts = [npm_files, *pip_files]
    return InstalledFiles(
        paths=tuple(path for part in parts for path in part.paths),
        versions=tuple(pair for part in parts for pair in part.versions),
        commands=tuple(sorted(command for part in parts for command in part.commands)),
    )


def check_readback(*, installed: InstalledFiles, read: Callable[[list[str]], str]) -> None:
    """Every installed file is on the written disk and every npm package has its pinned
    version; `read` runs debugfs requests on the disk and returns their output."""
    if not installed.paths:
        return
    found = read([f"stat {path}" for path in installed.paths]).count("Inode: ")
    if found != len(installed.paths):
        raise ImageError(f"the built disk lacks {len(installed.paths) - found} of the {len(installed.paths)} "
                         f"files the npm/pip installs made ({', '.join(installed.commands)})",
                         hint="build the image again; if it persists, report it")
    for path, version in installed.versions:
        text = read([f"cat {path}"])  # debugfs may echo the request before the file
        try:
            named = json.JSONDecoder().raw_decode(text, text.index("{"))[0].get("version")
        except ValueError:
            named = None
        if named != version:
            raise ImageError(f"the built disk's {path} names version {named!r}, not the pinned {version}",
                             hint="build the image again; if it persists, report it")


def _env(*, has_ca: bool) -> dict[str, str]:
    env = build_env()
    env["npm_config_update_notifier"] = "false"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if has_ca:  # the host's trust store: where the host's own downloads are trusted
        env.update({"npm_config_cafile": _BUILD_CA, "NODE_EXTRA_CA_CERTS": _BUILD_CA,
                    "PIP_CERT": _BUILD_CA, "SSL_CERT_FILE": _BUILD_CA})
    return env


def _install_npm(
    *, root: Path, packages: tuple[NpmPackage, ...], tools: Mapping[str, str], env: dict[str, str],
    cancel: CancelToken, on_line: Callable[[str], None],
) -> InstalledFiles:
    if not packages:
        return InstalledFiles(paths=(), versions=(), commands=())
    argv = [tools["chroot"], str(root), "npm", "install", "--global", "--prefix=/usr/local", "--no-audit",
            "--no-fund", f"--cache={_NPM_CACHE}", *(package.spec for package in packages)]
    try:
        run_tool(argv, cancel=cancel, env=env, on_line=on_line)
    except ToolFailed as exc:
        raise ToolFailed(exc.message, hint="check each name and version with `npm view NAME@VERSION` "
                         "and that the npm registry is reachable from this host") from exc
    paths: list[str] = []
    versions: list[tuple[str, str]] = []
    commands: list[str] = []
    for package in packages:
        manifest = f"{NPM_ROOT}/{package.name}/package.json"
        try:
            data = json.loads(inside(root, manifest).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ImageError(f"npm installed {package.spec} but {manifest} is unreadable: {exc}") from exc
        bins = data.get("bin") or {}
        if isinstance(bins, str):  # one bin file, named after the package
            bins = {package.name.rpartition("/")[2]: bins}
        paths.append(manifest)
        versions.append((manifest, package.version))
        for command in sorted(bins):
            paths.append(f"{BIN_DIR}/{command}")
            paths.append(str(PurePosixPath(NPM_ROOT, package.name, bins[command])))
            commands.append(command)
    return InstalledFiles(paths=tuple(paths), versions=tuple(versions), commands=tuple(commands))


def _install_pip(
    *, root: Path, package: PipPackage, tools: Mapping[str, str], env: dict[str, str],
    cancel: CancelToken, on_line: Callable[[str], None],
) -> InstalledFiles:
    venv = f"{VENV_ROOT}/{package.name}"
    python = f"{venv}/bin/python"
    run_tool([tools["chroot"], str(root), "python3", "-m", "venv", venv], cancel=cancel, env=env, on_line=on_line)
    try:
        run_tool([tools["chroot"], str(root), python, "-m", "pip", "install", "--no-cache-dir", "--no-input",
                  package.spec], cancel=cancel, env=env, on_line=on_line)
    except ToolFailed as exc:
        raise ToolFailed(exc.message, hint=f"check the version with `pip index versions {package.name}` (it "
                         "must support Python 3.11; the image has no compiler) and that PyPI is reachable from this "
                         "host") from exc
    out = run_tool([tools["chroot"], str(root), python, "-c", _PIP_FACTS, package.name],
                   cancel=cancel, env=env, capture_stdout=True)
    facts = json.loads(out)
    if facts["version"] != package.version:
        raise ImageError(f"pip installed {package.name} {facts['version']}, not the pinned {package.version}")
    if not facts["scripts"]:
        raise ImageError(f"{package.spec} has no command (console script) to put on the PATH",
                         hint="list only applications under `pip:`; libraries belong in a project's own venv")
    paths = [python, *facts["metadata"]]
    for script in facts["scripts"]:
        link = inside(root, f"{BIN_DIR}/{script}")
        if os.path.lexists(link):
            raise ImageError(f"{BIN_DIR}/{script} of {package.spec} is already taken by another install")
        os.symlink(f"{venv}/bin/{script}", link)
        paths += [f"{BIN_DIR}/{script}", f"{venv}/bin/{script}"]
    return InstalledFiles(paths=tuple(paths), versions=(), commands=tuple(facts["scripts"]))
