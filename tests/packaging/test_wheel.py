"""The Python distribution: sdist and wheel from pyproject.toml, installed the way pipx does
it (a fresh venv of its own, outside the checkout), then used."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentbox import __version__
from tests.packaging.chroot import run
from tests.packaging.test_completion import PRINT_SUBCOMMANDS, bash_complete

REPO = Path(__file__).resolve().parents[2]
DATA = {f"agentbox/data/vm_templates/{name}.yaml" for name in ("debian-12", "ubuntu-24.04")} | {
    "agentbox/data/cloud-init/base.yaml"}


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`python -m build` (sdist, then the wheel from the sdist) and a wheel straight from the tree."""
    out = tmp_path_factory.mktemp("dist")
    # A copy, symlinks kept as they are: setuptools writes build/ and *.egg-info into the tree,
    # and a stale build/lib in the checkout would leak deleted files into later wheels.
    tree = out / "checkout"
    shutil.copytree(REPO, tree, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"))
    run([sys.executable, "-m", "build", "--outdir", out / "via-sdist", tree], timeout=600)
    run([sys.executable, "-m", "build", "--wheel", "--outdir", out / "from-tree", tree], timeout=600)
    found = {"sdist": out / "via-sdist", "wheel": out / "via-sdist", "tree-wheel": out / "from-tree"}
    patterns = {"sdist": "agentbox_vm-*.tar.gz", "wheel": "agentbox_vm-*.whl", "tree-wheel": "agentbox_vm-*.whl"}
    return {kind: next(found[kind].glob(patterns[kind])) for kind in found}


def test_every_artefact_carries_the_templates_and_cloud_init_fragments(dists: dict[str, Path]) -> None:
    for kind in ("wheel", "tree-wheel"):
        names = set(zipfile.ZipFile(dists[kind]).namelist())
        assert DATA <= names, f"{kind} lacks {sorted(DATA - names)}"
    with tarfile.open(dists["sdist"]) as sdist:
        # Real files, not the checkout's symlinks (their targets are outside the package).
        members = {m.name.split("/", 1)[1]: m for m in sdist.getmembers() if "/" in m.name}
    assert all(name in members and members[name].isfile() for name in DATA), sorted(members)


@dataclass(frozen=True)
class Installed:
    venv: Path
    env: dict[str, str]
    home: Path

    def agentbox(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(self.venv / "bin/agentbox"), *args], capture_output=True, text=True,
                                timeout=300, env=self.env, cwd=self.home, check=False)
        assert not check or result.returncode == 0, result
        return result


@pytest.fixture(scope="module")
def installed(dists: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel in a new venv outside the checkout, run from there with the checkout out of sight."""
    home = tmp_path_factory.mktemp("pipx-like")
    venv = home / "venv"
    run([sys.executable, "-m", "venv", venv])
    run([venv / "bin/pip", "install", "-q", "--disable-pip-version-check", dists["wheel"]], timeout=900)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PATH=f"{venv / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin", AGENTBOX_ROOT=str(home / "agentbox-root"))
    return Installed(venv=venv, env=env, home=home)


def test_installed_wheel_is_the_one_that_runs(installed: Installed) -> None:
    # From the venv's own directory: `python -c` puts the working directory first on sys.path.
    where = subprocess.run([str(installed.venv / "bin/python"), "-c", "import agentbox; print(agentbox.__file__)"],
                           capture_output=True, text=True, env=installed.env, cwd=installed.home, check=True)
    assert where.stdout.startswith(str(installed.venv)), where.stdout
    assert installed.agentbox("--version").stdout.strip() == f"agentbox {__version__}"


def test_installed_wheel_lists_the_builtin_templates(installed: Installed) -> None:
    table = installed.agentbox("template", "list").stdout
    assert "debian-12" in table and "ubuntu-24.04" in table
    names = [t["name"] for t in json.loads(installed.agentbox("template", "list", "--json").stdout)]
    assert {"debian-12", "ubuntu-24.04"} <= set(names)


def test_installed_wheel_prints_a_working_bash_completion(installed: Installed, tmp_path: Path) -> None:
    script = installed.agentbox("completion", "bash").stdout
    commands = subprocess.run([str(installed.venv / "bin/python"), "-c", PRINT_SUBCOMMANDS], capture_output=True,
                              text=True, env=installed.env, cwd=installed.home, check=True).stdout.split()
    assert "template" in commands and "completion" in commands
    assert bash_complete(script, ["agentbox", ""], tmp_path) == sorted(commands)


def test_installed_wheel_doctor_reports_this_machine_honestly(installed: Installed) -> None:
    result = installed.agentbox("doctor", "--json", check=False)
    assert result.returncode in (0, 1), result
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    failed = [c for c in report["checks"] if c["status"] == "fail"]
    assert report["ok"] is (not failed) is (result.returncode == 0)
    assert all(c["hint"] for c in report["checks"] if c["status"] != "ok"), "a problem without a fix"
    # What the report says about tools matches what is on this machine.
    for tool in ("qemu-img", "qemu-system-x86_64", "ssh"):
        assert (checks[tool]["status"] == "ok") is (shutil.which(tool) is not None), checks[tool]
    assert (checks["image build"]["status"] == "ok") is (os.geteuid() == 0)
    # AGENTBOX_ROOT is honoured: the user's own directories are not what it looked at.
    assert installed.env["AGENTBOX_ROOT"] in checks["data dir"]["detail"]
