"""Templates: what a workspace is made from."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from agentbox.model.api_use import ApiBudget
from agentbox.model.budget import HostBudget
from agentbox.model.agent import AgentSpec
from agentbox.model.installs import NpmPackage, PipPackage
from agentbox.model.network import NetworkMode  # defined with the rest of network policy

__all__ = [
    "AgentSpec",
    "BuildRecipe",
    "CloudInitSpec",
    "DEBIAN_PACKAGE_RULE",
    "DownloadSource",
    "ImageSource",
    "NetworkMode",
    "PolicyDefaults",
    "Resources",
    "Template",
    "is_debian_package_name",
]

# Debian policy 5.6.1: lowercase letters, digits, '+', '-', '.'; at least two characters,
# starting with a letter or digit. Nothing else (no versions, no options) reaches apt-get.
_DEBIAN_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
DEBIAN_PACKAGE_RULE = "a Debian package name: lowercase letters, digits, '+', '-', '.', at least two characters"


def is_debian_package_name(name: str) -> bool:
    return bool(_DEBIAN_PACKAGE.match(name))


@dataclass(frozen=True)
class BuildRecipe:
    """An image built locally from Debian packages (`image: {build: debian-12}`).

    `packages` (Debian), `npm` and `pip` are installed on top of that base image when the
    image is built, on the host, as a layer of its own (never by cloud-init: the guest has
    no way out then).
    """

    recipe: str
    packages: tuple[str, ...] = ()  # sorted, without duplicates
    npm: tuple[NpmPackage, ...] = ()  # sorted by name, one version each
    pip: tuple[PipPackage, ...] = ()

    @property
    def layered(self) -> bool:
        """True when something is installed on top of the base image."""
        return bool(self.packages or self.npm or self.pip)


@dataclass(frozen=True)
class DownloadSource:
    """An image downloaded and verified: exactly one of sha256 / sha256_url is set."""

    url: str
    sha256: str | None = None
    sha256_url: str | None = None


ImageSource = BuildRecipe | DownloadSource


@dataclass(frozen=True)
class Resources:
    vcpus: int = 2
    memory_mib: int = 1024
    disk_gib: int = 8


@dataclass(frozen=True)
class CloudInitSpec:
    """Fragment files (from `cloud-init/`) merged in order, then inline additions."""

    fragments: tuple[str, ...] = ()
    runcmd: tuple[str, ...] = ()
    write_files: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class PolicyDefaults:
    network: NetworkMode = NetworkMode.OFF
    allowlist: tuple[str, ...] = ()
    reset_after_session: bool = True
    standby: bool = False  # a paused clean copy stands by for resets (services/standby.py)


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    image: ImageSource
    resources: Resources = field(default_factory=Resources)
    cloud_init: CloudInitSpec = field(default_factory=CloudInitSpec)
    policy: PolicyDefaults = field(default_factory=PolicyDefaults)
    budget: ApiBudget = field(default_factory=ApiBudget)  # per session, through the credential gateway
    host_budget: HostBudget = field(default_factory=HostBudget)  # per session, on the host (the same `budget:`)
    agents: tuple[AgentSpec, ...] = ()  # the first is the one `agentbox agent` starts by default
    source: str = ""  # the file it was loaded from, for messages
