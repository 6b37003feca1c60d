"""Allowlist learning and the secret scan before sharing, from inside one real guest.

Learning: the only servers are the test's own on the host's 127.0.0.1, reached by the name
the test settings pin to it. A pinned loopback name needs its host entry in learn mode
exactly as in allowlist mode (egress/policy.py rule 3b), so the two servers the guest uses
are listed; a third port, unlisted, shows that learning never reaches the host by itself.
The proposal made from the real decision log is applied with one entry left out: after
that only the other server answers.

Shares: a folder with a secret, shared with the secret left out, shows the guest everything
but that file; the read-only proof the guest ran after each attach is in `share list`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from agentbox.cli.main import main
from agentbox.model.progress import CancelToken

from .test_network import HelloHandler
from .conftest import EGRESS_TEST_HOST, VmEnv, quiet, run_in


_Hello = HelloHandler  # test_network's: "hello from PORT" on /, a slow download on /slow


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[int, int, int]]:
    made = [ThreadingHTTPServer(("127.0.0.1", 0), _Hello) for _ in range(3)]
    for server in made:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield made[0].server_address[1], made[1].server_address[1], made[2].server_address[1]
    for server in made:
        server.shutdown()


def curl(env: VmEnv, name: str, port: int) -> str:
    code, out, err = run_in(env, name, "curl", "-sS", "-m", "20", f"http://{EGRESS_TEST_HOST}:{port}/")
    return out + err


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_learn_then_apply_leaves_only_the_kept_host_reachable(
        vm_env: VmEnv, clean_workspace: str, servers: tuple[int, int, int], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    ws, (kept, dropped, unlisted) = clean_workspace, servers
    vm_env.cli_env(monkeypatch)
    cli(capsys, "net", ws, "learn")
    for port in (kept, dropped):
        cli(capsys, "net", "allow", ws, f"{EGRESS_TEST_HOST}:{port}")
    assert "network learn" in cli(capsys, "net", "show", ws)
    assert curl(vm_env, ws, kept) == f"hello from {kept}\n"
    assert curl(vm_env, ws, dropped) == f"hello from {dropped}\n"
    refused = curl(vm_env, ws, unlisted)
    assert f"hello from {unlisted}" not in refused and "blocked:loopback" in refused, refused

    proposal = cli(capsys, "net", "propose", ws)
    assert f"{EGRESS_TEST_HOST}:{kept}" in proposal and f"{EGRESS_TEST_HOST}:{dropped}" in proposal
    assert str(unlisted) not in proposal, "a refused connection is never proposed"
    applied = cli(capsys, "net", "propose", ws, "--exclude", f"{EGRESS_TEST_HOST}:{dropped}", "--apply")
    assert f"network allowlist, allowlist {EGRESS_TEST_HOST}:{kept} (applies now" in applied

    assert curl(vm_env, ws, kept) == f"hello from {kept}\n"
    after = curl(vm_env, ws, dropped)
    # Unlisted again, the pinned loopback name is refused as in allowlist mode (rule 3b).
    assert f"hello from {dropped}" not in after and "denied by rule blocked:loopback" in after, after
    policy = vm_env.services().network.policy(name=ws)
    assert policy.mode.value == "allowlist" and policy.render() == (f"{EGRESS_TEST_HOST}:{kept}",)
    cli(capsys, "net", ws, "off")


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    secret = tmp_path / "with-secret"
    secret.mkdir()
    (secret / "main.py").write_text("print('hello')\n")
    (secret / ".env").write_text("API_TOKEN=do-not-leak\n")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("notes\n")
    tmp_path.chmod(0o755)
    return secret, plain


def test_an_excluded_secret_is_absent_in_the_guest_and_the_read_only_proof_is_listed(
        vm_env: VmEnv, clean_workspace: str, folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    ws, (secret, plain) = clean_workspace, folders
    vm_env.cli_env(monkeypatch)
    capsys.readouterr()
    assert main(["share", "add", ws, str(secret), "--tag", "sec"]) == 2, "no choice: fails closed"
    assert ".env (dotenv file)" in capsys.readouterr().err
    added = cli(capsys, "share", "add", ws, str(secret), "--tag", "sec", "--exclude-secrets")
    assert "left out (1 file(s) with likely secrets): .env" in added and "the write was refused" in added
    cli(capsys, "share", "add", ws, str(plain), "--tag", "live")  # nothing found: shared live

    code, out, err = run_in(vm_env, ws, "sh", "-c", "ls -A /mnt/shares/sec; cat /mnt/shares/sec/main.py;"
                            " cat /mnt/shares/sec/.env; cat /mnt/shares/live/notes.txt")
    # lost+found: the copy disk's own ext4 folder.
    assert out.replace("lost+found\n", "") == "main.py\nprint('hello')\nnotes\n", (out, err)
    assert ".env: No such file" in err, err

    listing = cli(capsys, "share", "list", ws)
    lines = {line.split()[0]: line for line in listing.splitlines()[1:]}
    assert "write refused" in lines["sec"] and "1 left out" in lines["sec"]
    assert "write refused" in lines["live"] and "none found" in lines["live"]
    statuses = {s.share.tag: s for s in vm_env.services().shares.list(name=ws)}
    live_proof = statuses["live"].proof
    assert live_proof is not None and live_proof.refused
    # The live view let the guest remount it read-write: only the host's boundary refused the write.
    assert "the guest's mount went read-write, the write still failed" in live_proof.detail, live_proof

    (plain / ".npmrc").write_text("//registry.example/:_authToken=later\n")  # a secret appears on the host
    vm_env.services().snapshots.reset(name=ws, on_progress=quiet, cancel=CancelToken())
    statuses = {s.share.tag: s for s in vm_env.services().shares.list(name=ws)}
    assert statuses["live"].new_secrets == (".npmrc (npm auth token)",)
    assert statuses["live"].proof is not None and statuses["live"].proof.refused
    assert statuses["live"].proof.time >= live_proof.time
    events = [json.loads(line)["event"] for line in vm_env.paths.audit_log(ws).read_text().splitlines()]
    assert "share.new_secrets" in events and events.count("share.ro_proof") >= 4
    for tag in ("sec", "live"):
        cli(capsys, "share", "rm", ws, tag)
