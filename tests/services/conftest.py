"""Services on the Fake backend: real files, real image store, a scripted guest."""

from __future__ import annotations

import re

import hashlib
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agentbox.backends.fake import FakeBackend
from agentbox.config.paths import AppPaths
from agentbox.config.settings import Settings
from agentbox.config.templates import TemplateCatalogue, builtin_templates_dir, fragments_dir
from agentbox.egress.approvals import ApprovalRequest, ApprovalVerdict
from agentbox.egress.client import PolicyChange
from agentbox.egress.daemon import save_policy_file
from agentbox.errors import EgressError, GuestError
from agentbox.model.network import NetworkPolicy
from agentbox.services.egress_runner import EgressHealth
from agentbox.stores.records import WorkspaceFiles, WorkspaceRecord
from agentbox.images.store import ImageStore
from agentbox.model.progress import CancelToken, Progress, ProgressCallback
from agentbox.provision.refresh import is_refresh
from agentbox.remote.ssh import SshTarget
from agentbox.services.context import ServiceContext


def answer_ro_proofs(argv: Sequence[str], stderr: Callable[[bytes], None], *, writable: set[str]) -> None:
    """Answer the read-only proofs in agentbox's mount script as a guest would (the vm tests
    run the real ones): refused, unless the tag is in `writable`."""
    for tag in re.findall(r"agentbox-ro-proof (\S+) ", " ".join(argv)):
        verdict = "WRITABLE remount-rw=0: " if tag in writable else \
            "refused remount-rw=0: sh: 1: cannot create x: Read-only file system"
        stderr(f"agentbox-ro-proof {tag} {verdict}\n".encode())


@dataclass
class ScriptedGuest:
    """Stands in for the guest's SSH server (the vm tests use the real one)."""

    answers: bool = True
    cloud_init_output: bytes = b"status: done\n"
    cloud_init_code: int = 0
    on_wait: Callable[[], None] | None = None
    commands: list[list[str]] = field(default_factory=list)
    stdins: list[bytes | None] = field(default_factory=list)
    exit_code: int = 0
    # Asked first: an exit code (after writing any output), or None for the answers below.
    reply: Callable[[Sequence[str], Callable[[bytes], None]], int | None] | None = None
    writable_shares: set[str] = field(default_factory=set)  # tags whose read-only proof a write gets through

    def _prove(self, argv: Sequence[str], stderr: Callable[[bytes], None]) -> None:
        answer_ro_proofs(argv, stderr, writable=self.writable_shares)

    def wait_until_ready(self, *, target: SshTarget, timeout_s: float, cancel: CancelToken,
                         on_progress: ProgressCallback, check_alive: Callable[[], None] | None = None) -> None:
        if self.on_wait:
            self.on_wait()
        if check_alive:
            check_alive()
        if not self.answers:
            raise GuestError(f"the guest did not answer SSH within {timeout_s:.0f} s")

    def run_command(self, *, target: SshTarget, argv: Sequence[str], stdout: Callable[[bytes], None],
                    stderr: Callable[[bytes], None], stdin: bytes | Callable[[], bytes] | None = None,
                    timeout_s: float | None = None, cancel: CancelToken | None = None) -> int:
        self.commands.append(list(argv))
        self.stdins.append(stdin() if callable(stdin) else stdin)
        if self.reply is not None and (code := self.reply(argv, stdout)) is not None:
            return code
        if argv[:2] == ["cloud-init", "status"]:
            stdout(self.cloud_init_output)
            return self.cloud_init_code
        if is_refresh(argv):
            stdout(f"{time.time():.6f}\n".encode())
            self._prove(argv, stderr)
            return 0
        if list(argv[:3]) == ["sudo", "-n", "sh"]:  # agentbox's own mounts of shares and the outbox
            self._prove(argv, stderr)
            return 0
        if argv[:1] == ["hang"]:  # a command that runs until cancelled
            while True:
                assert cancel is not None, "a hanging command needs a cancel token"
                cancel.wait(0.01)
        stdout(b"ran\n")
        return self.exit_code


@dataclass
class ScriptedApprovalStream:
    """Stands in for the proxy's approval stream: hands out the requests it was given, in
    order, and records the answers (each accepted unless `accept` says otherwise)."""

    requests: list[ApprovalRequest] = field(default_factory=list)
    answers: list[tuple[str, ApprovalVerdict]] = field(default_factory=list)
    accept: bool = True
    closed: bool = False

    def next_request(self, *, timeout: float | None = None) -> ApprovalRequest | None:
        return self.requests.pop(0) if self.requests else None

    def answer(self, *, request_id: str, verdict: ApprovalVerdict) -> bool:
        self.answers.append((request_id, verdict))
        return self.accept

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> ScriptedApprovalStream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass
class RecordingEgress:
    """Stands in for the proxy and forward processes (the vm tests run the real ones)."""

    running: set[str] = field(default_factory=set)  # workspace names with live helpers
    forward_stopped: list[str] = field(default_factory=list)
    held_for_reset: list[str] = field(default_factory=list)
    forward_held_down: list[str] = field(default_factory=list)  # holds that keep the forward down (a swap)
    ensured: list[str] = field(default_factory=list)  # every ensure_running call, in order
    started_early: list[str] = field(default_factory=list)  # start(forward_down=True): create's early start
    policies: list[NetworkPolicy] = field(default_factory=list)
    fail_start: bool = False
    held: dict[str, list[ApprovalRequest]] = field(default_factory=dict)  # what the next stream hands out
    approval_streams: list[tuple[str, ScriptedApprovalStream]] = field(default_factory=list)

    def ensure_running(self, *, record: WorkspaceRecord, files: WorkspaceFiles) -> None:
        self.ensured.append(record.name)
        if self.fail_start:
            raise EgressError("the egress proxy did not come up (injected)")
        self.running.add(record.name)

    def start(self, *, record: WorkspaceRecord, files: WorkspaceFiles, forward_down: bool) -> None:
        if forward_down:
            self.started_early.append(record.name)

    def stop(self, *, files: WorkspaceFiles, forward_only: bool = False) -> None:
        if forward_only:
            self.forward_stopped.append(files.directory.name)
        else:
            self.running.discard(files.directory.name)

    def hold_through_power_cycle(self, *, files: WorkspaceFiles, forward_down: bool = False) -> None:
        self.held_for_reset.append(files.directory.name)
        if forward_down:
            self.forward_held_down.append(files.directory.name)

    def health(self, *, files: WorkspaceFiles) -> EgressHealth:
        up = files.directory.name in self.running
        return EgressHealth(proxy_running=up, forward_connected=up, supervised=up)

    def set_policy(self, *, files: WorkspaceFiles, policy: NetworkPolicy) -> PolicyChange:
        self.policies.append(policy)
        save_policy_file(path=files.policy, policy=policy)  # as the real proxy does
        return PolicyChange(policy=policy, cut=1 if policy.mode.value == "off" else 0)

    def approvals(self, *, files: WorkspaceFiles) -> ScriptedApprovalStream:
        name = files.directory.name
        if name not in self.running:
            raise EgressError(f"the egress proxy is not running (no control socket at {files.egress_dir})")
        stream = ScriptedApprovalStream(requests=self.held.pop(name, []))
        self.approval_streams.append((name, stream))
        return stream


@dataclass
class World:
    ctx: ServiceContext
    backend: FakeBackend
    guest: ScriptedGuest
    progress: list[Progress]
    storage: Path
    egress: RecordingEgress

    def leftovers(self) -> list[Path]:
        found = [p for p in (self.storage / "workspaces").rglob("*")] if (self.storage / "workspaces").exists() else []
        if not self.ctx.paths.workspaces_dir.exists():
            return found
        return found + [p for p in self.ctx.paths.workspaces_dir.glob("*")]


@pytest.fixture()
def world(tmp_path: Path) -> World:
    disk = tmp_path / "src" / "base.qcow2"
    disk.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1G"], check=True)
    digest = hashlib.sha256(disk.read_bytes()).hexdigest()
    paths = AppPaths.under(root=tmp_path / "root")
    paths.user_templates_dir.mkdir(parents=True)
    (paths.user_templates_dir / "tiny.yaml").write_text(
        f"name: tiny\nimage:\n  url: file://{disk}\n  sha256: {digest}\ncloud_init:\n  fragments: [base.yaml]\n")
    storage = tmp_path / "storage"
    settings = Settings(libvirt_uri="fake:///", storage_dir=storage, image_dir=tmp_path / "images",
                        default_template="tiny", boot_timeout_s=30)
    backend = FakeBackend(owner="test-owner")
    guest = ScriptedGuest()
    egress = RecordingEgress()
    progress: list[Progress] = []
    ctx = ServiceContext(paths=paths, settings=settings, backend=backend,
                         catalogue=TemplateCatalogue(builtin_dir=builtin_templates_dir(),
                                                     user_dir=paths.user_templates_dir),
                         images=ImageStore(image_dir=settings.image_dir), guest=guest,
                         fragments_dir=fragments_dir(), owner="test-owner", egress=egress)
    return World(ctx=ctx, backend=backend, guest=guest, progress=progress, storage=storage, egress=egress)
