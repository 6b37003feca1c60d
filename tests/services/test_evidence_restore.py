"""Restoring a panic's evidence on the Fake backend: the hashes are checked first, the new
workspace boots a copy of the evidence disk with the network off for good and no shares,
a failure leaves nothing, and the evidence is unchanged afterwards."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from agentbox.audit import read_records
from agentbox.errors import AlreadyExists, BackendError, EvidenceChanged, InvalidInput
from agentbox.model.evidence import EvidenceIntegrity
from agentbox.model.network import NetworkMode
from agentbox.model.progress import CancelToken
from agentbox.services.network import NetworkService
from agentbox.services.shares import ShareService
from agentbox.services.snapshots import SnapshotService

from .conftest import World
from .test_panic import make, services


def panicked(world: World):
    make(world)
    panic, _ = services(world)
    return panic, panic.panic(name="ws", on_progress=world.progress.append).evidence


def restore(world: World, panic, evidence_id: str, as_name: str = "look"):
    return panic.restore_evidence(name="ws", evidence_id=evidence_id, as_name=as_name,
                                  on_progress=world.progress.append, cancel=CancelToken())


def test_restore_boots_a_copy_of_the_evidence_disk_network_off_and_leaves_the_evidence_as_it_was(
        world: World) -> None:
    panic, evidence = panicked(world)
    restored = restore(world, panic, evidence.id)
    record = world.ctx.records.load(name="look")
    disk = record.storage.disk
    assert disk.read_bytes() == Path(evidence.disk.path).read_bytes()  # a copy, not the evidence file itself
    assert disk != Path(evidence.disk.path)
    assert record.inspection == f"ws/{evidence.id}" and record.resources == world.ctx.records.load(name="ws").resources
    policy = NetworkService(ctx=world.ctx).policy(name="look")
    assert policy.mode is NetworkMode.OFF and policy.allowlist == ()
    assert world.backend.attached(name=world.ctx.domain_name(name="look"))[0] == {"agentbox-outbox"}  # no shares
    assert restored.integrity_after is EvidenceIntegrity.MATCHES
    assert hashlib.sha256(Path(evidence.disk.path).read_bytes()).hexdigest() == evidence.disk.sha256
    assert "cannot be loaded into a running guest" in restored.memory_note
    for name in ("ws", "look"):
        kept = [r for r in read_records(path=world.ctx.paths.audit_log(name)) if r.event == "evidence.restored"]
        assert kept and kept[-1].details["evidence"] == evidence.id and kept[-1].details["as"] == "look"


def test_the_restored_workspace_refuses_any_network_but_off(world: World) -> None:
    panic, evidence = panicked(world)
    restore(world, panic, evidence.id)
    network = NetworkService(ctx=world.ctx)
    for mode in ("allowlist", "open"):
        with pytest.raises(InvalidInput, match="stays off") as err:
            network.set_mode(name="look", mode=mode)
        assert "agentbox destroy look" in (err.value.hint or "")
    with pytest.raises(InvalidInput, match="stays off"):
        network.set_mode(name="look", mode="learn")
    network.set_mode(name="look", mode="off")  # off is always fine
    assert network.policy(name="look").mode is NetworkMode.OFF
    SnapshotService(ctx=world.ctx).reset(name="look", on_progress=world.progress.append, cancel=CancelToken())
    assert network.policy(name="look").mode is NetworkMode.OFF


def test_no_folder_is_shared_into_restored_evidence(world: World, tmp_path: Path) -> None:
    panic, evidence = panicked(world)
    restore(world, panic, evidence.id)
    project = tmp_path / "project"
    project.mkdir()
    with pytest.raises(InvalidInput, match="restored evidence") as err:
        ShareService(ctx=world.ctx).add(name="look", source=str(project))
    assert "outbox" in (err.value.hint or "")
    assert world.backend.attached(name=world.ctx.domain_name(name="look"))[0] == {"agentbox-outbox"}


def test_evidence_that_changed_is_not_restored(world: World) -> None:
    panic, evidence = panicked(world)
    Path(evidence.disk.path).write_bytes(b"something else\n")
    with pytest.raises(EvidenceChanged) as err:
        restore(world, panic, evidence.id)
    assert "--verify" in (err.value.hint or "")
    assert "look" not in world.ctx.records.names()
    assert world.backend.get(name=world.ctx.domain_name(name="look")) is None


def test_a_failed_restore_leaves_nothing_and_the_evidence_unchanged(world: World) -> None:
    panic, evidence = panicked(world)
    world.backend.fail_on.add("start")
    with pytest.raises(BackendError, match="injected failure in start"):
        restore(world, panic, evidence.id)
    assert "look" not in world.ctx.records.names()
    assert world.backend.get(name=world.ctx.domain_name(name="look")) is None
    assert not world.ctx.workspace_storage(name="look").exists()
    assert panic.verify_evidence(name="ws", evidence_id=evidence.id).integrity is EvidenceIntegrity.MATCHES


def test_restore_refuses_its_own_name_and_an_existing_workspace(world: World) -> None:
    panic, evidence = panicked(world)
    with pytest.raises(InvalidInput, match="itself"):
        restore(world, panic, evidence.id, as_name="ws")
    restore(world, panic, evidence.id)
    with pytest.raises(AlreadyExists):
        restore(world, panic, evidence.id)
    assert panic.verify_evidence(name="ws", evidence_id=evidence.id).integrity is EvidenceIntegrity.MATCHES
