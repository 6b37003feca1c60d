"""`agentbox audit verify` on network decisions the real egress proxy wrote (`python -m
agentbox.egress`, on a Unix socket, mode off: every connection is refused and recorded), then
edited, deleted, moved or cut by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agentbox.audit import HEAD_EVENT, AuditLog, decision_trail, record_anchor
from agentbox.cli.main import main
from tests.egress.test_daemon import REPO, Files, stop, tunnel_through, wait_ready

pytestmark = pytest.mark.timeout(120)
DECISIONS = 5


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().out


def proxy_decisions(root: Path, tmp_path: Path, *, before: bytes = b"") -> tuple[Path, AuditLog]:
    """Five refused connections through the real proxy, written where agentbox keeps them
    (after `before`: lines an older proxy left), then the trail's head noted in the audit log
    as a lifecycle moment (a stop) does it."""
    workspace = root / "data" / "workspaces" / "ws"
    workspace.mkdir(parents=True)
    if before:
        (workspace / "net.jsonl").write_bytes(before)
    audit = AuditLog(path=root / "data" / "audit" / "ws.jsonl")
    audit.append(event="create.started", details={})
    paths = Files(proxy=tmp_path / "p.sock", control=tmp_path / "c.sock", policy=workspace / "policy.json",
                  log=workspace / "net.jsonl", pid=tmp_path / "p.pid")
    paths.policy.write_text(json.dumps({"mode": "off", "allowlist": []}))
    process = subprocess.Popen(
        [sys.executable, "-m", "agentbox.egress", "--proxy-socket", str(paths.proxy), "--control-socket",
         str(paths.control), "--policy-file", str(paths.policy), "--log-file", str(paths.log), "--pid-file",
         str(paths.pid), "--audit-log", str(audit.path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(process, paths)
        for port in range(DECISIONS):
            head, _ = tunnel_through(paths.proxy, f"127.0.0.1:{9 + port}", b"")
            assert head.startswith(b"HTTP/1.1 403")
    finally:
        assert stop(process) == 0  # writes what it still holds, then exits
    head = decision_trail(path=paths.log).synced_head()
    assert head is not None and head.seq == DECISIONS
    audit.append(event=HEAD_EVENT, details={"seq": head.seq, "hash": head.hash, "why": "stopped"})
    record_anchor(log=audit, why="stopped")
    return paths.log, audit


def test_verify_covers_the_proxy_decisions_and_names_each_kind_of_tampering(agentbox_root: Path, tmp_path: Path,
                                                                            capsys) -> None:
    net, _ = proxy_decisions(agentbox_root, tmp_path)
    code, out = run(["audit", "verify", "ws"], capsys)
    assert code == 0, out
    assert f"network decisions intact: {DECISIONS} record(s) in 1 file(s), 1 head(s) noted" in out

    original = net.read_bytes().splitlines(keepends=True)
    edited = original[:]
    edited[1] = edited[1].replace(b'"allowed": false', b'"allowed": true')
    assert edited != original
    cases = {
        "edited": (edited, f"{net}:2 (edited)"),
        "deleted": (original[:2] + original[3:], f"{net}:3 (deleted)"),
        "reordered": ([original[0], original[2], original[1], *original[3:]], f"{net}:2 (reordered)"),
        "truncated": (original[:3], f"{net}:4 (truncated)"),
    }
    for kind, (content, where) in cases.items():
        net.write_bytes(b"".join(content))
        code, out = run(["audit", "verify", "ws"], capsys)
        assert code == 1, (kind, out)
        assert f"ws: network decisions BROKEN at {where}" in out, (kind, out)
        assert "ws: audit log intact" in out  # the audit log itself was not touched
    net.unlink()
    code, out = run(["audit", "verify", "ws", "--json"], capsys)
    result = json.loads(out)
    assert code == 1 and result["intact"] is False and result["network"]["intact"] is False


def test_decisions_from_before_the_chain_are_called_unchained(agentbox_root: Path, tmp_path: Path,
                                                              capsys) -> None:
    old = json.dumps({"host": "old.example", "allowed": True}).encode() + b"\n"
    net, _ = proxy_decisions(agentbox_root, tmp_path, before=old)
    code, out = run(["audit", "verify", "ws"], capsys)
    assert code == 0, out
    assert f"network decisions intact: {DECISIONS} record(s)" in out
    assert "1 network decision line(s) in net.unchained.jsonl.N are unchained (from before" in out
    assert b"old.example" not in net.read_bytes()
