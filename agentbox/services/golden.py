"""Golden states: a guest booted and provisioned once per image, template recipe and shape,
saved with its RAM, from which `create` restores warm clones instead of cold booting.

A golden state is a directory `storage_dir/golden/ID/`: `disk.qcow2` (an overlay on the
image, read-only once saved; every clone's overlay sits on it), `memory.save` (libvirt's
save image of the running guest), `bootstrap_key` (the only key the golden guest accepts;
a clone's identity step replaces it, see provision/identity.py) and `golden.json`, written
last: a directory without it is a build in progress or a crashed one. Its id hashes what
the guest was made of (image, the rendered cloud-init without identity, vCPUs, memory, disk
size, GOLDEN_VERSION), so a changed recipe makes a new one. Built in `.tmp-ID-PID` and
renamed into place whole, under one lock per id, which restores also take: a restore
rewrites the save image's header (backends/libvirt/save_image.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from agentbox.backends.base import DirectKernelBoot, DiskSpec, DomainMetadata, DomainSpec
from agentbox.config.atomic_file import write_atomically
from agentbox.errors import AgentboxError, Busy, GuestError, HostKeyMismatch, InvalidInput
from agentbox.host.locks import held_lock
from agentbox.images.store import ImageInfo
from agentbox.model.guest import GUEST_USER
from agentbox.model.progress import CancelToken, Progress, ProgressCallback
from agentbox.model.template import Resources, Template
from agentbox.provision import cloudinit, keys, seed
from agentbox.provision.identity import GOLDEN_HOSTNAME, identity_argv, identity_input
from agentbox.remote.ssh import SshTarget
from agentbox.services.context import ServiceContext
from agentbox.services.guest_ready import wait_cloud_init, wait_for_guest
from agentbox.stores.records import Phase, WorkspaceRecord
from agentbox.stores.ssh_config import LOOPBACK

GOLDEN_VERSION = 1
GOLDEN_JSON = "golden.json"
_PLACEHOLDER_KEY = keys.KeyPair(private_openssh="golden", public_openssh="ssh-ed25519 golden")


@dataclass(frozen=True)
class GoldenState:
    golden_id: str
    template: str
    image_id: str
    resources: Resources
    created: str
    directory: Path
    bootstrap_host_key: str  # the golden guest's host key (public), pinned to reach a fresh clone
    size_bytes: int = 0

    @property
    def disk(self) -> Path:
        return self.directory / "disk.qcow2"

    @property
    def memory(self) -> Path:
        return self.directory / "memory.save"

    @property
    def bootstrap_key(self) -> Path:
        return self.directory / "bootstrap_key"

    def bootstrap_target(self, *, port: int) -> SshTarget:
        return SshTarget(host=LOOPBACK, port=port, user=GUEST_USER, private_key=self.bootstrap_key,
                         host_key=self.bootstrap_host_key)


class GoldenStore:
    def __init__(self, *, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._root = ctx.settings.storage_dir / "golden"

    def golden_id_for(self, *, template: Template, resources: Resources, image: ImageInfo) -> str:
        user_data = cloudinit.render_user_data(user_data=cloudinit.build_user_data(
            spec=template.cloud_init, fragments_dir=self._ctx.fragments_dir, hostname=GOLDEN_HOSTNAME,
            authorized_key=_PLACEHOLDER_KEY.public_openssh, host_key=_PLACEHOLDER_KEY))
        recipe = {"version": GOLDEN_VERSION, "image": image.image_id, "user_data": user_data,
                  "resources": asdict(resources)}
        digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
        return f"golden-{digest}"

    def list(self) -> tuple[GoldenState, ...]:
        if not self._root.is_dir():
            return ()
        found = (_load(path) for path in sorted(self._root.iterdir()) if not path.name.startswith("."))
        return tuple(state for state in found if state is not None)

    def get(self, *, golden_id: str) -> GoldenState | None:
        return _load(self._root / golden_id)

    @contextmanager
    def locked(self, *, golden_id: str, wait_s: float) -> Iterator[None]:
        busy = Busy(f"golden state {golden_id} is busy (being built or restored)", hint="try again in a moment")
        with held_lock(path=self._root / f".{golden_id}.lock", busy=busy, wait_s=wait_s):
            yield

    def restore(self, *, golden: GoldenState, domain: str) -> None:
        """The golden RAM into the clone's domain (defined by clone_spec), under the golden lock:
        the save image's header is rewritten for each clone (backends/libvirt/save_image.py)."""
        with self.locked(golden_id=golden.golden_id, wait_s=120):
            self._ctx.backend.restore_memory(name=domain, path=golden.memory)

    def ensure(self, *, template: Template, resources: Resources, image: ImageInfo,
               on_progress: ProgressCallback, cancel: CancelToken) -> GoldenState:
        """The golden state for this recipe, built now (a cold boot, once) if it is missing."""
        golden_id = self.golden_id_for(template=template, resources=resources, image=image)
        self._root.mkdir(parents=True, exist_ok=True, mode=0o711)
        with self.locked(golden_id=golden_id, wait_s=self._ctx.settings.boot_timeout_s * 2):
            found = self.get(golden_id=golden_id)
            if found is not None:
                return found
            return self._build(golden_id=golden_id, template=template, resources=resources, image=image,
                               on_progress=on_progress, cancel=cancel)

    def remove(self, *, golden_id: str) -> None:
        users = [record.name for record in self._ctx.records.readable() if record.golden_id == golden_id]
        if users:
            raise InvalidInput(f"golden state {golden_id} is the base disk of workspace(s) {', '.join(users)}",
                               hint="destroy those workspaces first (agentbox destroy NAME)")
        with self.locked(golden_id=golden_id, wait_s=10):
            directory = self._root / golden_id
            (directory / GOLDEN_JSON).unlink(missing_ok=True)  # first: a half-removed one is no golden state
            shutil.rmtree(directory, ignore_errors=True)

    # -- building -------------------------------------------------------------------------

    def _build(self, *, golden_id: str, template: Template, resources: Resources, image: ImageInfo,
               on_progress: ProgressCallback, cancel: CancelToken) -> GoldenState:
        ctx = self._ctx
        for stale in self._root.glob(f".tmp-{golden_id}-*"):
            shutil.rmtree(stale, ignore_errors=True)  # a build killed earlier (we hold the lock)
        tmp = self._root / f".tmp-{golden_id}-{os.getpid()}"
        domain = f"{ctx.settings.domain_prefix}{golden_id}"
        if ctx.backend.get(name=domain) is not None:  # the guest of a build that was killed
            ctx.backend.destroy(name=domain)
            ctx.backend.undefine(name=domain)
        defined = False
        try:
            tmp.mkdir(mode=0o711)
            tmp.chmod(0o711)
            report = _Steps(on_progress, golden_id)
            report("disk", f"building golden state {golden_id} for {template.name}: a cold boot, once")
            client = keys.generate_ed25519(comment=f"agentbox-{golden_id}-bootstrap")
            host_key = keys.generate_ed25519(comment=f"agentbox-{golden_id}-host")
            state = GoldenState(golden_id=golden_id, template=template.name, image_id=image.image_id,
                                resources=resources, created=ctx.clock().isoformat(timespec="seconds"),
                                directory=tmp, bootstrap_host_key=host_key.public_openssh)
            keys.write_private_key(path=state.bootstrap_key, keypair=client)
            ctx.backend.create_overlay(path=state.disk, backing=image.disk, backing_format=image.disk_format,
                                       size_gib=resources.disk_gib)
            user_data = cloudinit.build_user_data(spec=template.cloud_init, fragments_dir=ctx.fragments_dir,
                                                  hostname=GOLDEN_HOSTNAME, authorized_key=client.public_openssh,
                                                  host_key=host_key)
            seed_path = tmp / "seed.img"
            seed.write_seed_iso(path=seed_path, user_data=cloudinit.render_user_data(user_data=user_data),
                                meta_data=cloudinit.render_meta_data(instance_id=f"agentbox-{golden_id}",
                                                                     hostname=GOLDEN_HOSTNAME))
            port = _free_port()
            record = WorkspaceRecord(name=golden_id, domain=domain, template=template.name,
                                     image_id=image.image_id, created=state.created, ssh_port=port,
                                     resources=resources, storage_dir=str(tmp),
                                     host_key_public=host_key.public_openssh, phase=Phase.CREATING)
            ctx.backend.define(spec=clone_spec(ctx=ctx, name=domain, workspace=golden_id, template=template.name,
                                               resources=resources, image=image, disk=state.disk, seed=seed_path,
                                               ssh_port=port, console_log=tmp / "console.log", created=state.created))
            defined = True
            report("boot", "booting the golden guest")
            ctx.backend.start(name=domain)
            target = state.bootstrap_target(port=port)
            wait_for_guest(ctx=ctx, record=record, target=target, on_progress=on_progress, cancel=cancel)
            report("cloud-init", "provisioning the golden guest (cloud-init)")
            wait_cloud_init(ctx=ctx, record=record, target=target, cancel=cancel)
            ctx.guest.run_command(target=target, argv=["sync"], stdout=lambda _: None, stderr=lambda _: None,
                                  timeout_s=120)
            cancel.raise_if_cancelled()
            report("save", "saving the golden guest's RAM")
            ctx.backend.save_memory(name=domain, path=state.memory)
            ctx.backend.undefine(name=domain)
            defined = False
            state.disk.chmod(0o444)  # every clone's overlay reads through it; nothing writes it again
            final = self._root / golden_id
            size = sum(path.stat().st_size for path in tmp.iterdir() if path.is_file())
            done = GoldenState(**{**asdict(state), "resources": resources, "directory": final, "size_bytes": size})
            write_atomically(path=tmp / GOLDEN_JSON, data=_dump(done))
            os.rename(tmp, final)
            report("done", f"golden state {golden_id} ready ({size / 2**20:.0f} MiB)")
            return done
        except BaseException:
            if defined:
                for undo in (ctx.backend.destroy, ctx.backend.undefine):
                    try:
                        undo(name=domain)
                    except AgentboxError:
                        pass
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def give_identity(*, ctx: ServiceContext, record: WorkspaceRecord, golden: GoldenState, client_key: str,
                  host_key: keys.KeyPair, on_progress: ProgressCallback, cancel: CancelToken) -> None:
    """A restored clone's own identity (provision/identity.py), over SSH with the bootstrap key
    and the golden host key pinned, before anything else can log in."""
    bootstrap = golden.bootstrap_target(port=record.ssh_port)
    err = bytearray()

    def run() -> int:
        err.clear()
        return ctx.guest.run_command(target=bootstrap, argv=list(identity_argv()), stdout=lambda _: None,
                                     stderr=err.extend, timeout_s=120, cancel=cancel,
                                     stdin=lambda: identity_input(hostname=record.name, authorized_key=client_key,
                                                                  host_key=host_key))

    try:
        code = run()  # a restored guest's sshd is already listening
    except HostKeyMismatch:
        raise
    except GuestError:
        wait_for_guest(ctx=ctx, record=record, target=bootstrap, on_progress=on_progress, cancel=cancel)
        code = run()
    if code != 0:
        raise GuestError(f"giving the clone {record.name} its own identity failed (exit {code}): "
                         f"{err.decode(errors='replace').strip()[-300:]}")
    # No login of its own to prove the new identity: the gateway token's install and the
    # forward, before create returns, log in with the workspace's key and the newly pinned
    # host key, and either failing undoes the create (a handshake saved under TCG: ~1 s).


def clone_spec(*, ctx: ServiceContext, name: str, workspace: str, template: str, resources: Resources,
               image: ImageInfo, disk: Path, seed: Path, ssh_port: int, console_log: Path, created: str) -> DomainSpec:
    """The domain of a workspace (and of a golden guest): one shape, so a golden state's RAM
    restores into any clone of it."""
    return DomainSpec(
        name=name,
        metadata=DomainMetadata(workspace=workspace, owner=ctx.owner, template=template, created=created),
        vcpus=resources.vcpus, memory_mib=resources.memory_mib,
        disks=(DiskSpec(path=disk, format="qcow2", serial="agentbox-root"),
               DiskSpec(path=seed, format="raw", readonly=True, serial="agentbox-seed")),
        ssh_port=ssh_port, console_log=console_log,
        kernel_boot=(DirectKernelBoot(kernel=image.kernel, initrd=image.initrd, cmdline=image.cmdline or "")
                     if image.kernel and image.initrd else None),
    )


class _Steps:
    def __init__(self, sink: ProgressCallback, golden_id: str) -> None:
        self._sink = sink
        self._golden_id = golden_id

    def __call__(self, step: str, detail: str) -> None:
        self._sink(Progress(step=f"golden {step}", detail=detail))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _dump(state: GoldenState) -> bytes:
    data = asdict(state)
    data["directory"] = str(state.directory)
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def _load(directory: Path) -> GoldenState | None:
    """The golden state in `directory`, or None unless it is complete."""
    try:
        raw = json.loads((directory / GOLDEN_JSON).read_text(encoding="utf-8"))
        raw["resources"] = Resources(**raw["resources"])
        raw["directory"] = Path(raw["directory"])
        state = GoldenState(**raw)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if state.directory != directory or not all(p.is_file() for p in (state.disk, state.memory, state.bootstrap_key)):
        return None
    return state
