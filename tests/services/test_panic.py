"""The panic button on the Fake backend: the cut comes first, the guest is frozen before its
evidence is kept, the session ends with a receipt, the workspace is reset, and the network
stays off; every failure on the way still ends with the network cut and the reset done."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from agentbox.audit import read_records
from agentbox.backends.base import DomainState
from agentbox.errors import EgressError
from agentbox.model.evidence import EvidenceIntegrity
from agentbox.model.network import NetworkMode
from agentbox.model.progress import CancelToken
from agentbox.services.create import CreateRequest, create_workspace
from agentbox.services.network import NetworkService
from agentbox.services.panic import PanicService
from agentbox.services.sessions import SessionService
from agentbox.services.snapshots import SnapshotService
from agentbox.services.workspaces import WorkspaceService

from .conftest import World


def services(world: World) -> tuple[PanicService, SessionService]:
    holder: dict[str, SessionService] = {}
    snapshots = SnapshotService(ctx=world.ctx, end_session=lambda *a: holder["s"].reset_in_session(*a))
    sessions = SessionService(ctx=world.ctx, workspaces=WorkspaceService(ctx=world.ctx), snapshots=snapshots)
    holder["s"] = sessions
    return PanicService(ctx=world.ctx, network=NetworkService(ctx=world.ctx), sessions=sessions,
                        snapshots=snapshots), sessions


def make(world: World, *, allowlist: bool = True) -> None:
    create_workspace(ctx=world.ctx, request=CreateRequest(name="ws"), on_progress=world.progress.append,
                     cancel=CancelToken())
    if allowlist:
        NetworkService(ctx=world.ctx).set_mode(name="ws", mode="allowlist")


def events(world: World) -> list[str]:
    return [r.event for r in read_records(path=world.ctx.paths.audit_log("ws"))]


def test_panic_cuts_first_freezes_keeps_evidence_then_resets_with_the_network_left_off(world: World) -> None:
    make(world)
    panic, sessions = services(world)
    sessions.start(name="ws", max_minutes=None, on_progress=world.progress.append, cancel=CancelToken())
    world.backend.calls.clear()
    outcome = panic.panic(name="ws", on_progress=world.progress.append)
    assert world.egress.policies[-1].mode is NetworkMode.OFF and outcome.cut == 1
    calls = [method for method, _ in world.backend.calls]
    assert calls.index("pause") < calls.index("save_evidence") < calls.index("destroy") < calls.index("revert_snapshot")
    evidence = outcome.evidence
    assert evidence is not None and evidence.memory is not None and evidence.disk is not None
    for kept in evidence.files:
        path = Path(kept.path)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == kept.sha256
        assert path.stat().st_mode & 0o777 == 0o600
    # it is outside the workspace's own storage, so neither reset nor destroy touches it
    assert not Path(evidence.disk.path).is_relative_to(world.ctx.workspace_storage(name="ws"))
    trail = events(world)
    assert trail.index("network.policy") < trail.index("panic") < trail.index("panic.evidence") \
        < trail.index("session.receipt") < trail.index("reset")
    saved = [r for r in read_records(path=world.ctx.paths.audit_log("ws")) if r.event == "panic.evidence"][-1]
    assert saved.details["files"] == {"memory.elf": evidence.memory.sha256, "disk.qcow2": evidence.disk.sha256}
    assert outcome.receipt and json.loads((world.ctx.paths.workspace_receipts("ws") /
                                           f"{outcome.receipt}.json").read_text())["reason"] == "panic"
    assert sessions.current(name="ws") is None
    assert NetworkService(ctx=world.ctx).policy(name="ws").mode is NetworkMode.OFF  # after the reset too
    assert world.backend.get(name=world.ctx.domain_name(name="ws")).state is DomainState.RUNNING  # clean, running
    stored = panic.verify_evidence(name="ws", evidence_id=evidence.id[:8])
    assert stored.integrity is EvidenceIntegrity.MATCHES


def test_evidence_survives_destroy_shows_tampering_and_goes_with_rm(world: World) -> None:
    make(world)
    panic, _ = services(world)
    evidence = panic.panic(name="ws", on_progress=world.progress.append).evidence
    assert evidence is not None and evidence.disk is not None
    WorkspaceService(ctx=world.ctx).destroy(name="ws", on_progress=lambda _: None)
    assert [e.id for e in panic.evidence(name="ws")] == [evidence.id]
    Path(evidence.disk.path).write_bytes(b"something else")
    assert panic.verify_evidence(name="ws", evidence_id=evidence.id).integrity is EvidenceIntegrity.DIFFERS
    panic.remove_evidence(name="ws", evidence_id=evidence.id)
    assert panic.evidence(name="ws") == () and not Path(evidence.disk.path).exists()
    assert events(world)[-1] == "evidence.removed"


def test_a_proxy_that_cannot_take_the_change_is_stopped_instead(world: World, monkeypatch) -> None:
    make(world)
    panic, _ = services(world)

    def refuse(**_: object) -> None:
        raise EgressError("the control socket did not answer (injected)")
    monkeypatch.setattr(world.egress, "set_policy", refuse)
    outcome = panic.panic(name="ws", on_progress=world.progress.append)
    assert NetworkService(ctx=world.ctx).policy(name="ws").mode is NetworkMode.OFF
    record = [r for r in read_records(path=world.ctx.paths.audit_log("ws")) if r.event == "panic"][-1]
    assert record.details["how"] == "egress stopped"
    assert outcome.reset is not None


def test_evidence_that_cannot_be_saved_leaves_no_files_and_the_reset_still_happens(world: World) -> None:
    make(world)
    world.backend.fail_on = {"save_evidence"}  # type: ignore[assignment]
    panic, _ = services(world)
    outcome = panic.panic(name="ws", on_progress=world.progress.append)
    evidence = outcome.evidence
    assert evidence is not None and evidence.files == () and "injected failure" in evidence.problem
    assert not panic.evidence_store().files_dir(name="ws", evidence_id=evidence.id).exists()
    assert outcome.reset is not None and "reset" in events(world)


def test_a_backend_without_evidence_still_cuts_and_resets(world: World) -> None:
    make(world)
    world.backend._capabilities = replace(world.backend.capabilities, evidence=False)
    panic, _ = services(world)
    outcome = panic.panic(name="ws", on_progress=world.progress.append)
    assert outcome.evidence is not None and outcome.evidence.files == ()
    assert "cannot save" in outcome.evidence.problem and outcome.reset is not None


def test_a_stopped_workspace_gets_its_network_off_and_no_evidence(world: World) -> None:
    make(world)
    WorkspaceService(ctx=world.ctx).stop(name="ws", on_progress=lambda _: None, force=True, cancel=CancelToken())
    panic, _ = services(world)
    outcome = panic.panic(name="ws", on_progress=world.progress.append)
    assert outcome.evidence is None
    assert NetworkService(ctx=world.ctx).policy(name="ws").mode is NetworkMode.OFF


def test_panic_on_an_unknown_workspace_is_a_clear_error(world: World) -> None:
    panic, _ = services(world)
    with pytest.raises(Exception, match="no workspace|not found|does not exist"):
        panic.panic(name="nope", on_progress=world.progress.append)
