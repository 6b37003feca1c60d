"""Every bad input a user can give gets a clear message and a hint, through main(argv)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agentbox.cli.main import main
from agentbox.config.settings import URI_ENV


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def user_template(root: Path, name: str, text: str) -> Path:
    directory = root / "config" / "templates"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("bad", ["Bad_Name", "-lead", "trail-", "x" * 64, "with space", "ünï", ""])
def test_bad_workspace_names_are_refused_with_the_rule(bad: str, agentbox_root: Path, capsys) -> None:
    code, _, err = run(["create", "--", bad], capsys)
    assert code == 2
    assert "invalid workspace name" in err and "lowercase letters" in err
    assert "hint:" in err


def test_unknown_template_names_the_known_ones(agentbox_root: Path, capsys) -> None:
    code, _, err = run(["create", "ws", "--template", "nope"], capsys)
    assert code == 4
    assert "no template named 'nope'" in err and "debian-12" in err


def test_template_with_bad_yaml_names_file_and_line(agentbox_root: Path, capsys) -> None:
    path = user_template(agentbox_root, "broken", "name: broken\nimage:\n  build: debian-12\n  - oops\n")
    code, _, err = run(["template", "show", "broken"], capsys)
    assert code == 3
    assert f"{path}:4: invalid YAML" in err


def test_template_with_unknown_key_names_line_and_field(agentbox_root: Path, capsys) -> None:
    path = user_template(agentbox_root, "extra", "name: extra\nimage:\n  build: debian-12\nresources:\n  cpus: 2\n")
    code, _, err = run(["create", "ws", "--template", "extra"], capsys)
    assert code == 3
    assert f"{path}:5: resources.cpus: unknown key" in err
    assert "vcpus" in err  # the hint lists the known keys


def test_template_with_wrong_type_names_line_and_field(agentbox_root: Path, capsys) -> None:
    path = user_template(agentbox_root, "typed",
                         "name: typed\nimage: {build: debian-12}\nresources:\n  memory_mib: lots\n")
    code, _, err = run(["template", "show", "typed"], capsys)
    assert code == 3
    assert f"{path}:4: resources.memory_mib: expected an integer, got string 'lots'" in err


def test_template_without_image_is_refused(agentbox_root: Path, capsys) -> None:
    path = user_template(agentbox_root, "noimg", "name: noimg\ndescription: x\n")
    code, _, err = run(["template", "show", "noimg"], capsys)
    assert code == 3
    assert f"{path}:1: image: missing required field" in err


def test_user_template_overrides_builtin(agentbox_root: Path, capsys) -> None:
    user_template(agentbox_root, "debian-12", "name: debian-12\ndescription: mine\nimage: {build: debian-12}\n")
    code, out, _ = run(["template", "list"], capsys)
    assert code == 0
    assert "mine" in out and "ubuntu-24.04" in out


def test_missing_image_file_is_an_image_error(agentbox_root: Path, tmp_path: Path, capsys) -> None:
    user_template(agentbox_root, "gone",
                  f"name: gone\nimage:\n  url: file://{tmp_path}/absent.qcow2\n  sha256: {'ab' * 32}\n")
    code, _, err = run(["image", "pull", "gone"], capsys)
    assert code == 7
    assert "absent.qcow2" in err and "hint:" in err


def test_failed_checksum_leaves_no_image(agentbox_root: Path, tmp_path: Path, capsys) -> None:
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1G"], check=True)
    wrong = hashlib.sha256(b"something else").hexdigest()
    user_template(agentbox_root, "tampered", f"name: tampered\nimage:\n  url: file://{disk}\n  sha256: {wrong}\n")
    code, _, err = run(["image", "pull", "tampered"], capsys)
    assert code == 7
    assert "checksum" in err.lower() or "sha256" in err.lower()
    assert run(["image", "list", "--json"], capsys)[1].strip() == "[]"


def test_no_libvirt_says_how_to_start_it(agentbox_root: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv(URI_ENV, f"qemu+unix:///system?socket={tmp_path}/no-such-socket")
    code, _, err = run(["list"], capsys)
    assert code == 8
    assert "libvirtd" in err and "hint:" in err


def test_destroy_without_yes_and_no_terminal_asks_for_yes(agentbox_root: Path, capsys, monkeypatch) -> None:
    (agentbox_root / "data" / "workspaces" / "ws").mkdir(parents=True)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    code, _, err = run(["destroy", "ws"], capsys)
    assert code == 2 and "--yes" in err


def test_unknown_workspace_is_not_found(agentbox_root: Path, capsys) -> None:
    for argv in (["start", "ghost"], ["stop", "ghost"], ["destroy", "ghost", "--yes"], ["exec", "ghost", "--", "true"],
                 ["agent", "ghost"]):
        code, _, err = run(argv, capsys)
        assert code == 4, argv
        assert "no workspace named 'ghost'" in err and "agentbox list" in err


def test_exec_without_a_command_says_how(agentbox_root: Path, capsys) -> None:
    code, _, err = run(["exec", "ws"], capsys)
    assert code == 2 and "agentbox exec ws -- COMMAND" in err


def test_out_of_range_resources_are_refused(agentbox_root: Path, capsys) -> None:
    code, _, err = run(["create", "ws", "--memory", "12"], capsys)
    assert code == 2 and "--memory 12 is out of range" in err


def test_bad_settings_file_names_file_line_and_field(agentbox_root: Path, capsys) -> None:
    settings = agentbox_root / "config" / "settings.yaml"
    settings.write_text("accel: warp\n")
    code, _, err = run(["list"], capsys)
    assert code == 3
    assert f"{settings}:1: accel: 'warp' is not one of auto, kvm, tcg" in err


def test_bad_accel_env_is_refused(agentbox_root: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("AGENTBOX_ACCEL", "fast")
    code, out, _ = run(["doctor"], capsys)
    assert code == 1
    assert "[FAIL] acceleration" in out and "AGENTBOX_ACCEL" in out


def test_usage_errors_exit_2_with_a_hint(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["create"])
    assert exit_info.value.code == 2
    assert "hint:" in capsys.readouterr().err


def test_template_with_a_bad_allowlist_entry_names_line_and_field(agentbox_root: Path, capsys) -> None:
    path = user_template(agentbox_root, "leaky", "name: leaky\nimage: {build: debian-12}\npolicy:\n"
                                                  "  network: allowlist\n  allowlist: [pypi.org, 'http://x/y']\n")
    code, _, err = run(["template", "show", "leaky"], capsys)
    assert code == 3
    assert f"{path}:5: policy.allowlist:" in err and "http://x/y" in err


def test_doctor_says_whether_the_outbox_limit_can_be_enforced_and_the_default(agentbox_root: Path, capsys) -> None:
    settings = agentbox_root / "config" / "settings.yaml"
    settings.write_text(settings.read_text() + "outbox_limit_mib: 256\n")
    _, out, _ = run(["doctor"], capsys)
    [line] = [line for line in out.splitlines() if "outbox limit" in line]
    if os.geteuid() == 0 and shutil.which("mkfs.ext4") and Path("/dev/loop-control").exists():
        assert line.startswith("[ok") and "256 MiB by default" in line, out
    else:
        assert line.startswith("[warn]") and "workspaces get no outbox" in line, out


def test_doctor_as_a_user_says_the_outbox_limit_needs_root(agentbox_root: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("runs doctor as nobody, which needs root to switch to")
    for folder in (agentbox_root, *agentbox_root.parents):  # nobody must reach the settings and the test node
        if folder == Path("/tmp"):
            break
        os.chmod(folder, 0o755)
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                           "agentbox", "doctor"], capture_output=True, text=True, timeout=120, cwd="/",
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "HOME": "/"})
    [line] = [line for line in done.stdout.splitlines() if "outbox limit" in line] or [done.stderr]
    assert line.startswith("[warn]") and "needs root" in line and "workspaces get no outbox" in line, done.stdout
