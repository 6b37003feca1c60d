"""The per-workspace record agentbox keeps beside libvirt's metadata.

One JSON file per workspace in its data dir. The record is written before anything else
at create (phase `creating`) and flipped to `ready` last, so an interrupted create is
recognisable afterwards and `destroy` knows what to remove.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path

from agentbox.config.atomic_file import write_atomically
from agentbox.model.remote_host import JumpHost, jump_host_of
from agentbox.config.paths import AppPaths
from agentbox.errors import ConfigError
from agentbox.model.api_use import ApiBudget
from agentbox.model.budget import HostBudget, OnExceeded
from agentbox.model.template import Resources


# A workspace with standby (services/standby.py) has two domains, NAME and NAME.b: the one
# in the record runs, the other stands by; a reset swaps them. "." is in no workspace name.
SLOT_B = ".b"


def other_slot(domain: str) -> str:
    """The standby domain of the workspace whose running domain is `domain`."""
    return domain.removesuffix(SLOT_B) if domain.endswith(SLOT_B) else domain + SLOT_B


def slot_of(domain: str) -> str:
    return SLOT_B if domain.endswith(SLOT_B) else ""


class Phase(StrEnum):
    CREATING = "creating"
    READY = "ready"
    DESTROYING = "destroying"


@dataclass(frozen=True)
class WorkspaceRecord:
    name: str
    domain: str
    template: str
    image_id: str
    created: str
    ssh_port: int
    resources: Resources
    storage_dir: str  # disks, seed and console log (reachable by QEMU)
    host_key_public: str  # the pinned guest host key
    phase: Phase = Phase.CREATING
    # The internal snapshot a reset returns to; "" when resets recreate the disk and cold
    # boot instead (no RAM snapshots here), with the reason in clean_fallback.
    clean_snapshot: str = ""
    clean_fallback: str = ""
    reset_after_session: bool = True
    last_reset: str = ""  # ISO 8601, UTC; "" if never reset
    # The outbox's size limit asked for at create; 0 in records from before limits (the
    # settings' default then). The outbox image's size is the limit in force.
    outbox_limit_mib: int = 0
    # The per-session API budget from the template (0: no limit), enforced by the gateway.
    budget_requests: int = 0
    budget_bytes: int = 0
    budget_tokens: int = 0
    # The per-session host budgets (0: no limit): the template's, or `agentbox budget`'s.
    budget_egress_bytes: int = 0
    budget_disk_write_bytes: int = 0
    budget_cpu_seconds: int = 0
    budget_on_exceeded: str = "end"

    @property
    def api_budget(self) -> ApiBudget:
        return ApiBudget(requests=self.budget_requests, bytes=self.budget_bytes, tokens=self.budget_tokens)

    @property
    def host_budget(self) -> HostBudget:
        return HostBudget(egress_bytes=self.budget_egress_bytes, disk_write_bytes=self.budget_disk_write_bytes,
                          cpu_seconds=self.budget_cpu_seconds, on_exceeded=OnExceeded(self.budget_on_exceeded))

    def with_host_budget(self, budget: HostBudget) -> WorkspaceRecord:
        return replace(self, budget_egress_bytes=budget.egress_bytes, budget_disk_write_bytes=budget.disk_write_bytes,
                       budget_cpu_seconds=budget.cpu_seconds, budget_on_exceeded=budget.on_exceeded.value)
    # The golden state (services/golden.py) whose disk this workspace's overlay sits on; ""
    # for a cold-booted workspace, whose overlay sits on the image itself.
    golden_id: str = ""
    # The backend that made the workspace and runs it for its whole life (records from
    # before there was a choice are libvirt's).
    backend: str = "libvirt"
    # The libvirt URI of the remote host the VM runs on ("" when it runs here): SSH into the
    # guest jumps through that host (model/remote_host.py).
    remote_uri: str = ""
    # "WORKSPACE/EVIDENCE_ID" for a workspace restored from a panic's evidence for
    # inspection: its network stays off (services/network.py refuses anything else).
    inspection: str = ""
    # Standby (services/standby.py): wanted at all; the clean snapshot of the paused copy in
    # the other slot once it is ready ("": none, resets revert in place); the clean state's
    # export (clean-N.qcow2 and .save) the copies are made from (0: none yet, or stale); and
    # the export the running slot's disk sits on (0: the image or golden state, as created).
    standby: bool = False
    standby_snapshot: str = ""
    standby_port: int = 0  # where the paused copy's SSH listens until it takes over ssh_port
    standby_export: int = 0
    disk_export: int = 0

    @property
    def jump(self) -> JumpHost | None:
        return jump_host_of(self.remote_uri) if self.remote_uri else None

    @property
    def storage(self) -> WorkspaceStorage:
        """The files of the domain that runs now (with standby, one of two slots)."""
        return WorkspaceStorage(directory=Path(self.storage_dir), slot=slot_of(self.domain))


@dataclass(frozen=True)
class WorkspaceStorage:
    """Paths of one workspace's files in the storage dir (where QEMU's user can reach them)."""

    directory: Path
    slot: str = ""  # SLOT_B for the second domain of a workspace with standby

    @property
    def disk(self) -> Path:
        return self.directory / f"disk{self.slot}.qcow2"

    @property
    def seed(self) -> Path:
        return self.directory / "seed.img"

    @property
    def console_log(self) -> Path:
        return self.directory / f"console{self.slot}.log"

    def clean_disk(self, export: int) -> Path:
        """Standby: export N of the clean state's disk (read-only once made); the slots'
        overlays sit on it, and it on the disk's own base (the image, or an earlier export)."""
        return self.directory / f"clean-{export}.qcow2"

    def clean_memory(self, export: int) -> Path:
        """Standby: export N of the clean state's RAM (a save image)."""
        return self.directory / f"clean-{export}.save"

    @property
    def outbox(self) -> Path:
        """Where the outbox image is mounted, and where the guest's virtiofs share points."""
        return self.directory / "outbox"

    @property
    def outbox_image(self) -> Path:
        """The outbox's fixed-size filesystem (host/outbox_disk.py): attached to no VM."""
        return self.directory / "outbox.img"

    def share_mountpoint(self, tag: str) -> Path:
        """The read-only bind of a shared folder (virtiofs over a host read-only mount)."""
        return self.directory / "shares" / tag

    def share_image(self, tag: str) -> Path:
        """The point-in-time copy of a shared folder, attached as a read-only disk."""
        return self.directory / f"share-{tag}.img"


RECORD_FILE = "workspace.json"


@dataclass(frozen=True)
class WorkspaceFiles:
    """Paths of one workspace's per-user files."""

    directory: Path

    @property
    def record(self) -> Path:
        return self.directory / RECORD_FILE

    @property
    def client_key(self) -> Path:
        return self.directory / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.directory / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.directory / "ssh_config"

    @property
    def policy(self) -> Path:
        """The network policy; the egress proxy rewrites it when it changes live."""
        return self.directory / "policy.json"

    @property
    def shares(self) -> Path:
        return self.directory / "shares.json"

    @property
    def share_checks(self) -> Path:
        """Per share: the last read-only proof from inside the guest, secrets found since it was added."""
        return self.directory / "share-checks.json"

    @property
    def egress_dir(self) -> Path:
        # Short names: a Unix socket path must stay under 108 bytes.
        return self.directory / "net"

    @property
    def net_log(self) -> Path:
        return self.directory / "net.jsonl"

    @property
    def session(self) -> Path:
        return self.directory / "session.json"

    @property
    def gateway_token(self) -> Path:
        """The phantom token the guest gives the credential gateway (stores/gateway_tokens.py)."""
        return self.directory / "gateway-token.json"


class RecordStore:
    def __init__(self, *, paths: AppPaths) -> None:
        self._paths = paths

    def files(self, *, name: str) -> WorkspaceFiles:
        return WorkspaceFiles(directory=self._paths.workspace_dir(name))

    def exists(self, *, name: str) -> bool:
        return self.files(name=name).record.exists()

    def load(self, *, name: str) -> WorkspaceRecord | None:
        path = self.files(name=name).record
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: unreadable workspace record: {exc}",
                              hint=f"agentbox destroy {name} removes the workspace") from None
        try:
            raw["resources"] = Resources(**raw["resources"])
            raw["phase"] = Phase(raw["phase"])
            return WorkspaceRecord(**raw)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: damaged workspace record ({exc})",
                              hint=f"agentbox destroy {name} removes the workspace") from None

    def save(self, *, record: WorkspaceRecord) -> None:
        files = self.files(name=record.name)
        files.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomically(path=files.record, data=(json.dumps(asdict(record), indent=2) + "\n").encode())

    def readable(self) -> Iterator[WorkspaceRecord]:
        """Every workspace's record that can be read (a damaged or missing one is skipped:
        what asks, e.g. for ports or golden states in use, must not fail on one)."""
        for name in self.names():
            try:
                record = self.load(name=name)
            except ConfigError:
                continue
            if record is not None:
                yield record

    def names(self) -> tuple[str, ...]:
        """Names with a workspace directory, complete or not."""
        root = self._paths.workspaces_dir
        if not root.is_dir():
            return ()
        return tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))

    def remove(self, *, name: str) -> None:
        shutil.rmtree(self.files(name=name).directory, ignore_errors=True)
