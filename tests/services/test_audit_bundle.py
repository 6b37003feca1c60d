"""`audit export` bundles on the Fake backend: everything the trail holds goes into one file,
which checks as intact anywhere, and any change made to it afterwards shows."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from agentbox.audit import DECISION_EVENT, decision_trail
from agentbox.errors import InvalidInput
from agentbox.model.progress import CancelToken
from agentbox.services.anchoring import anchor_trail
from agentbox.services.audit_export import MANIFEST, AuditBundles
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.services.sessions import SessionService
from agentbox.services.snapshots import SnapshotService
from agentbox.services.workspaces import WorkspaceService

from .conftest import World


def busy_workspace(world: World) -> None:
    """A workspace with something of everything: decisions, a recorded exec, a receipt."""
    create_workspace(ctx=world.ctx, request=CreateRequest(name="ws"), on_progress=world.progress.append,
                     cancel=CancelToken())
    trail = decision_trail(path=world.ctx.records.files(name="ws").net_log)
    for port in (443, 80):
        trail.append(event=DECISION_EVENT, details={"host": "example.org", "port": port, "allowed": port == 443})
    anchor_trail(ctx=world.ctx, name="ws", why="test")
    workspaces = WorkspaceService(ctx=world.ctx)
    sessions = SessionService(ctx=world.ctx, workspaces=workspaces, snapshots=SnapshotService(ctx=world.ctx))
    sessions.start(name="ws", max_minutes=None, on_progress=world.progress.append, cancel=CancelToken())
    workspaces.exec(name="ws", argv=["true"], stdout=lambda _: None, stderr=lambda _: None)
    sessions.end(name="ws", reason="test", on_progress=world.progress.append, cancel=CancelToken())


def repack(bundle: Path, change) -> None:  # type: ignore[no-untyped-def]
    """Rewrite the bundle with `change(name, data) -> data | None` applied (None drops the file)."""
    with tarfile.open(bundle, "r:gz") as old:
        files = [(m.name, old.extractfile(m).read()) for m in old.getmembers() if m.isfile()]  # type: ignore[union-attr]
    with tarfile.open(bundle, "w:gz") as new:
        for name, data in files:
            data = change(name, data)
            if data is not None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                new.addfile(info, io.BytesIO(data))


def test_a_bundle_carries_the_whole_trail_and_checks_as_intact(world: World, tmp_path: Path) -> None:
    busy_workspace(world)
    bundles = AuditBundles(paths=world.ctx.paths)
    bundle = bundles.export(name="ws", out=tmp_path / "ws.tar.gz")
    assert bundle.intact
    with tarfile.open(bundle.path) as opened:
        names = opened.getnames()
    assert MANIFEST in names and "data/audit/ws.jsonl" in names and "data/audit/ws.anchors.jsonl" in names
    assert "data/workspaces/ws/net.jsonl" in names
    assert any(n.startswith("data/receipts/ws/") for n in names)
    assert any(n.startswith("data/evidence/ws/recordings/") for n in names)
    check = bundles.check(path=bundle.path)
    assert check.intact and check.workspace == "ws" and check.audit.records > 5 and check.trail.intact
    assert check.files == len(names) - 1


def test_a_changed_record_in_the_bundle_shows_in_its_manifest_and_its_chain(world: World, tmp_path: Path) -> None:
    busy_workspace(world)
    bundles = AuditBundles(paths=world.ctx.paths)
    bundle = bundles.export(name="ws", out=tmp_path / "ws.tar.gz").path
    repack(bundle, lambda name, data: data.replace(b'"port": 80', b'"port": 81')
           if name == "data/workspaces/ws/net.jsonl" else data)
    check = bundles.check(path=bundle)
    assert not check.intact
    assert check.changed == ("data/workspaces/ws/net.jsonl",) and not check.trail.intact
    assert check.audit.intact  # the audit log itself was left alone


def test_a_removed_receipt_and_a_planted_file_show(world: World, tmp_path: Path) -> None:
    busy_workspace(world)
    bundles = AuditBundles(paths=world.ctx.paths)
    bundle = bundles.export(name="ws", out=tmp_path / "ws.tar.gz").path
    repack(bundle, lambda name, data: None if name.startswith("data/receipts/") else data)
    check = bundles.check(path=bundle)
    assert not check.intact and any(n.startswith("data/receipts/") for n in check.changed)
    with tarfile.open(bundle, "r:gz") as old:
        files = [(m.name, old.extractfile(m).read()) for m in old.getmembers()]  # type: ignore[union-attr]
    with tarfile.open(bundle, "w:gz") as new:
        for name, data in [*files, ("data/receipts/ws/feed.json", b"{}")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            new.addfile(info, io.BytesIO(data))
    assert "data/receipts/ws/feed.json" in bundles.check(path=bundle).unlisted


@pytest.mark.parametrize("member", ["../escape.txt", "/etc/owned", "link"])
def test_a_bundle_that_reaches_outside_its_folder_is_refused(world: World, tmp_path: Path, member: str) -> None:
    bundle = tmp_path / "evil.tar.gz"
    with tarfile.open(bundle, "w:gz") as evil:
        manifest = json.dumps({"format": 1, "workspace": "ws", "files": {}}).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(manifest)
        evil.addfile(info, io.BytesIO(manifest))
        info = tarfile.TarInfo(member)
        if member == "link":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            evil.addfile(info)
        else:
            info.size = 3
            evil.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(InvalidInput):
        AuditBundles(paths=world.ctx.paths).check(path=bundle)
    assert not (tmp_path / "escape.txt").exists()


def test_a_file_that_is_no_bundle_is_a_clear_error(world: World, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_text("not a tar")
    with pytest.raises(InvalidInput, match="not an agentbox audit bundle"):
        AuditBundles(paths=world.ctx.paths).check(path=junk)
