"""The secret scan before sharing and the read-only proof after each attach, on the Fake
backend with real copy disks and read-only views (the tests run as root). The guest's side
of the proof is the scripted guest's; tests/vm/test_learn.py runs the real one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agentbox.errors import InvalidInput, PermissionDenied, SecretsFound
from agentbox.model.progress import CancelToken
from agentbox.model.shares import ShareMechanism
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.services.shares import ShareService
from agentbox.services.snapshots import SnapshotService
from agentbox.services.workspaces import WorkspaceService

from .conftest import World

PEM = "-----BEGIN " + "OPENSSH PRIVATE KEY-----\nb3Blbg==\n-----END OPENSSH PRIVATE KEY-----\n"


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    (folder / "src").mkdir(parents=True)
    (folder / "readme.md").write_text("hello\n")
    (folder / ".env").write_text("API_KEY=hunter2\n")
    (folder / "src" / "deploy_key").write_text(PEM)
    return folder


def make(world: World, **kwargs: object) -> None:
    create_workspace(ctx=world.ctx, request=CreateRequest(name="ws", **kwargs),  # type: ignore[arg-type]
                     on_progress=world.progress.append, cancel=CancelToken())


def audit(world: World) -> list[dict[str, object]]:
    return [json.loads(line) for line in world.ctx.paths.audit_log("ws").read_text().splitlines()]


def files_in(image: Path) -> str:
    return subprocess.run(["debugfs", "-R", "ls -p /", str(image)], capture_output=True, text=True, check=True).stdout


def test_without_a_choice_a_folder_with_secrets_is_not_shared(world: World, project: Path) -> None:
    make(world)
    shares = ShareService(ctx=world.ctx)
    with pytest.raises(SecretsFound) as caught:
        shares.add(name="ws", source=str(project))
    error = caught.value
    assert ".env (dotenv file)" in error.message and "src/deploy_key (private key (PEM/OpenSSH))" in error.message
    assert "hunter2" not in error.message and "b3Blbg" not in error.message, "never the secret itself"
    assert "--exclude-secrets" in (error.hint or "") and "--allow-secrets" in (error.hint or "")
    assert shares.list(name="ws") == () and world.backend.attached(name="agentbox-ws")[0] == {"agentbox-outbox"}


def test_excluded_secrets_are_not_in_the_guests_copy(world: World, project: Path) -> None:
    make(world)
    added = ShareService(ctx=world.ctx).add(name="ws", source=str(project), secrets="exclude")
    share = added.share
    assert share.mechanism is ShareMechanism.COPY_DISK and share.excluded == (".env", "src/deploy_key")
    image = world.ctx.records.load(name="ws").storage.share_image("project")  # type: ignore[union-attr]
    listing = files_in(image)
    assert "readme.md" in listing and ".env" not in listing
    assert "deploy_key" not in subprocess.run(["debugfs", "-R", "ls -p /src", str(image)], capture_output=True,
                                              text=True, check=True).stdout
    event = [e for e in audit(world) if e["event"] == "share.added"][-1]["details"]
    assert event["secrets_choice"] == "exclude" and event["excluded"] == [".env", "src/deploy_key"]  # type: ignore[index]


def test_a_live_mechanism_cannot_leave_files_out(world: World, project: Path) -> None:
    make(world)
    with pytest.raises(InvalidInput, match="cannot leave files out"):
        ShareService(ctx=world.ctx).add(name="ws", source=str(project), secrets="exclude",
                                        mechanism="virtiofs-ro-bind")


def test_allowed_secrets_are_shared_live_and_remembered(world: World, project: Path) -> None:
    make(world)
    share = ShareService(ctx=world.ctx).add(name="ws", source=str(project), secrets="allow").share
    assert share.mechanism.live and share.excluded == ()
    assert share.secrets == (".env (dotenv file)", "src/deploy_key (private key (PEM/OpenSSH))")


def test_every_attach_proves_read_only_from_the_guest_and_list_shows_it(world: World, project: Path) -> None:
    make(world)
    shares = ShareService(ctx=world.ctx)
    shares.add(name="ws", source=str(project), tag="code", secrets="allow")
    [status] = shares.list(name="ws")
    assert status.proof is not None and status.proof.refused and "Read-only file system" in status.proof.detail
    first = status.proof.time
    script = " ".join(world.guest.commands[-1])
    assert "remount,rw /mnt/shares/code" in script, "the guest's own ro is lifted first: the host must refuse"
    SnapshotService(ctx=world.ctx).reset(name="ws", on_progress=world.progress.append, cancel=CancelToken())
    [status] = shares.list(name="ws")
    assert status.proof is not None and status.proof.refused and status.proof.time >= first
    proofs = [e for e in audit(world) if e["event"] == "share.ro_proof"]
    assert len(proofs) == 2 and all(p["details"]["refused"] for p in proofs)  # type: ignore[index]


def test_a_share_the_guest_could_write_to_is_refused_and_unplugged(world: World, project: Path) -> None:
    make(world)
    world.guest.writable_shares.add("code")
    with pytest.raises(PermissionDenied, match="could write"):
        ShareService(ctx=world.ctx).add(name="ws", source=str(project), tag="code", secrets="allow")
    assert ShareService(ctx=world.ctx).list(name="ws") == ()
    assert "code" not in world.backend.attached(name="agentbox-ws")[0]


def test_a_secret_that_appears_later_is_reported_at_the_next_attach(world: World, project: Path) -> None:
    make(world)
    shares, workspaces = ShareService(ctx=world.ctx), WorkspaceService(ctx=world.ctx)
    shares.add(name="ws", source=str(project), tag="code", secrets="allow")
    assert shares.list(name="ws")[0].new_secrets == ()
    (project / ".npmrc").write_text("//registry.npmjs.org/:_authToken=abc\n")
    workspaces.stop(name="ws", force=True, on_progress=world.progress.append, cancel=CancelToken())
    workspaces.start(name="ws", on_progress=world.progress.append, cancel=CancelToken())
    [status] = shares.list(name="ws")
    assert status.new_secrets == (".npmrc (npm auth token)",)
    [event] = [e for e in audit(world) if e["event"] == "share.new_secrets"]
    assert event["details"]["found"] == [".npmrc (npm auth token)"]  # type: ignore[index]
    SnapshotService(ctx=world.ctx).reset(name="ws", on_progress=world.progress.append, cancel=CancelToken())
    assert len([e for e in audit(world) if e["event"] == "share.new_secrets"]) == 1, "audited once, not per attach"


def test_create_refuses_a_share_with_secrets_before_making_anything(world: World, project: Path) -> None:
    with pytest.raises(SecretsFound):
        make(world, shares=(str(project),))
    assert world.backend.calls == [] and world.leftovers() == []
    make(world, shares=(str(project),), share_secrets="exclude")
    [status] = ShareService(ctx=world.ctx).list(name="ws")
    assert status.share.excluded == (".env", "src/deploy_key")
