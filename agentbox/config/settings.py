"""The settings file (`settings.yaml` in the config dir) and the environment overrides."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from agentbox.config.paths import SYSTEM_STORAGE_DIR, AppPaths
from agentbox.config.yaml_source import Fields, load_yaml_file
from agentbox.errors import ConfigError, InvalidInput
from agentbox.model.remote_host import jump_host_of
from agentbox.model.workspace import Accel, BackendKind

DEFAULT_URI = "qemu:///system"
URI_ENV = "AGENTBOX_LIBVIRT_URI"
BACKEND_ENV = "AGENTBOX_BACKEND"
DEFAULT_OUTBOX_LIMIT_MIB = 1024
OUTBOX_LIMIT_RANGE_MIB = (16, 1 << 20)  # 16 MiB .. 1 TiB
_KEYS = frozenset(
    {"backend", "libvirt_uri", "accel", "storage_dir", "image_dir", "domain_prefix", "boot_timeout_s",
     "default_template", "egress_hosts", "outbox_limit_mib", "record_sessions",
     "gateway_ca_bundle", "gateway_upstream_port", "warm_create", "remote_pool", "hosts"}
)
_POOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PREFIX = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


@dataclass(frozen=True)
class Settings:
    # Which backend new workspaces use; existing ones stay on the one that made them.
    backend: BackendKind = BackendKind.LIBVIRT
    libvirt_uri: str = DEFAULT_URI
    accel: Accel = Accel.AUTO
    storage_dir: Path = SYSTEM_STORAGE_DIR  # disks, seeds, console logs: reachable by QEMU
    image_dir: Path = SYSTEM_STORAGE_DIR / "images"  # verified base images, read-only
    domain_prefix: str = "agentbox-"
    boot_timeout_s: int = 900  # a cold boot under TCG takes ~100 s; leave room for slow hosts
    default_template: str = "debian-12"
    # Names the egress proxy takes as these addresses without looking them up (like
    # /etc/hosts, for every workspace); the policy still judges the address.
    egress_hosts: tuple[tuple[str, str], ...] = ()
    # What the guest may store in a new workspace's outbox (enforced on the host, see
    # host/outbox_disk.py); `create --outbox-mib` and `outbox NAME --limit-mib` override it.
    outbox_limit_mib: int = DEFAULT_OUTBOX_LIMIT_MIB
    # Shells, ssh commands and `exec` output are kept as asciicast recordings (stores/recordings.py).
    record_sessions: bool = True
    # The credential gateway trusts the system's CAs, plus this PEM bundle if set, and sends
    # to the providers' port 443 unless told otherwise: both for tests' local fake providers.
    gateway_ca_bundle: Path | None = None
    gateway_upstream_port: int = 443
    # `create` restores a golden state (services/golden.py) instead of cold booting;
    # `create --warm` / `--no-warm` decide for one create.
    warm_create: bool = False
    # With a qemu+ssh:// libvirt_uri: the storage pool on that host that holds the disks,
    # seeds and the cached images agentbox uploads (backends/libvirt/remote_storage.py).
    remote_pool: str = "agentbox"
    # More libvirt hosts whose workspaces this agentbox lists and drives (each workspace stays
    # on the host that made it; new ones go to libvirt_uri). Each a qemu+ssh:// or local URI.
    hosts: tuple[str, ...] = ()


def is_system_uri(uri: str) -> bool:
    return uri.rstrip("/").endswith("/system")


def load_settings(*, paths: AppPaths, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    if paths.settings_file.exists():
        doc = load_yaml_file(path=paths.settings_file)
        fields = Fields(doc=doc, key_path=(), allowed=_KEYS)
        if fields.has("backend"):
            values["backend"] = _backend(fields.string("backend"), where=lambda msg: fields.error("backend", msg))
        if fields.has("libvirt_uri"):
            values["libvirt_uri"] = fields.string("libvirt_uri")
        if fields.has("accel"):
            values["accel"] = _accel(fields)
        for key in ("storage_dir", "image_dir"):
            if fields.has(key):
                values[key] = _absolute(fields, key)
        if fields.has("domain_prefix"):
            prefix = fields.string("domain_prefix")
            if not _PREFIX.match(prefix):
                raise fields.error("domain_prefix", "must be lowercase letters, digits and '-', up to 31")
            values["domain_prefix"] = prefix
        if fields.has("boot_timeout_s"):
            values["boot_timeout_s"] = fields.integer("boot_timeout_s", default=900, minimum=10, maximum=7200)
        if fields.has("default_template"):
            values["default_template"] = fields.string("default_template")
        if fields.has("outbox_limit_mib"):
            low, high = OUTBOX_LIMIT_RANGE_MIB
            values["outbox_limit_mib"] = fields.integer("outbox_limit_mib", default=DEFAULT_OUTBOX_LIMIT_MIB,
                                                        minimum=low, maximum=high)
        if fields.has("gateway_ca_bundle"):
            values["gateway_ca_bundle"] = _absolute(fields, "gateway_ca_bundle")
        if fields.has("gateway_upstream_port"):
            values["gateway_upstream_port"] = fields.integer("gateway_upstream_port", default=443, minimum=1,
                                                             maximum=65535)
        if fields.has("warm_create"):
            values["warm_create"] = fields.boolean("warm_create", default=False)
        if fields.has("remote_pool"):
            pool = fields.string("remote_pool")
            if not _POOL.match(pool):
                raise fields.error("remote_pool", "must be a libvirt pool name: letters, digits, '.', '_', '-'")
            values["remote_pool"] = pool
        if fields.has("hosts"):
            values["hosts"] = _hosts(fields)
        if fields.has("egress_hosts"):
            values["egress_hosts"] = _egress_hosts(fields)
        if fields.has("record_sessions"):
            values["record_sessions"] = fields.boolean("record_sessions", default=True)
    if env.get(URI_ENV):
        values["libvirt_uri"] = env[URI_ENV]
    if env.get(BACKEND_ENV):
        values["backend"] = _backend(env[BACKEND_ENV], where=lambda msg: ConfigError(
            f"{BACKEND_ENV}: {msg}", hint=f"unset {BACKEND_ENV} or set it to libvirt or qemu"))
    uri = str(values.get("libvirt_uri", DEFAULT_URI))
    qemu = values.get("backend") is BackendKind.QEMU
    if "storage_dir" not in values and (qemu or not is_system_uri(uri)):
        # A session daemon, or QEMU driven directly, runs QEMU as the user: the user's own
        # dirs are reachable.
        values["storage_dir"] = paths.data_dir / "storage"
        values.setdefault("image_dir", paths.cache_dir / "images")
    storage = Path(values.get("storage_dir", SYSTEM_STORAGE_DIR))  # type: ignore[arg-type]
    values.setdefault("image_dir", storage / "images")
    return Settings(**values)  # type: ignore[arg-type]


def _backend(raw: str, *, where: Callable[[str], Exception]) -> BackendKind:
    try:
        return BackendKind(raw.strip().lower())
    except ValueError:
        raise where(f"{raw!r} is not a backend; use libvirt or qemu") from None


def _accel(fields: Fields) -> Accel:
    raw = fields.string("accel")
    try:
        return Accel(raw)
    except ValueError:
        raise fields.error("accel", f"{raw!r} is not one of auto, kvm, tcg, hvf") from None


def _absolute(fields: Fields, key: str) -> Path:
    path = Path(fields.string(key)).expanduser()
    if not path.is_absolute():
        raise fields.error(key, "must be an absolute path")
    return path


def _hosts(fields: Fields) -> tuple[str, ...]:
    uris = fields.strings("hosts")
    for uri in uris:
        try:
            jump_host_of(uri)
        except InvalidInput as exc:
            raise fields.error("hosts", exc.message, hint=exc.hint) from None
    return uris


def _egress_hosts(fields: Fields) -> tuple[tuple[str, str], ...]:
    names = fields.sub("egress_hosts", allowed=frozenset(fields.value.get("egress_hosts") or {}))
    pairs = []
    for name in names.value:
        address = names.string(name)
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise names.error(name, f"{address!r} is not an IP address", hint="e.g. web.test: 127.0.0.1") from None
        pairs.append((str(name).lower().rstrip("."), address))
    return tuple(pairs)
