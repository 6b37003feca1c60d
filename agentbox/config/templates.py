"""The template catalogue: built-in templates, then the user's, which add or override."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TypeVar

import yaml

from agentbox.config.atomic_file import write_atomically
from agentbox.config.yaml_source import Fields, YamlDoc, load_yaml_file
from agentbox.errors import ConfigError, InvalidInput, NotFound
from agentbox.model.network import parse_allow_entry
from agentbox.model.api_use import ApiBudget
from agentbox.model.budget import HostBudget, OnExceeded, parse_seconds, parse_size
from agentbox.model.agent import PROVIDERS, AgentSpec
from agentbox.model.installs import NpmPackage, PipPackage, parse_npm_spec, parse_pip_spec
from agentbox.model.template import (
    DEBIAN_PACKAGE_RULE,
    BuildRecipe,
    CloudInitSpec,
    DownloadSource,
    ImageSource,
    NetworkMode,
    PolicyDefaults,
    Resources,
    Template,
    is_debian_package_name,
)

_TOP = frozenset({"name", "description", "image", "resources", "cloud_init", "policy", "budget", "agent"})
_API_BUDGET = frozenset({"requests", "bytes", "tokens"})
_HOST_BUDGET = frozenset({"egress_bytes", "disk_write_bytes", "cpu_seconds", "on_exceeded"})
_BUDGET = _API_BUDGET | _HOST_BUDGET
_BUDGET_MAX = 1 << 50
_IMAGE = frozenset({"build", "packages", "npm", "pip", "url", "sha256", "sha256_url"})
_AGENT = frozenset({"name", "command", "description", "providers", "api_hosts"})
AGENT_DESCRIPTION_MAX = 60
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$")
_RESOURCES = frozenset({"vcpus", "memory_mib", "disk_gib"})
_CLOUD_INIT = frozenset({"fragments", "packages", "runcmd", "write_files"})  # packages: refused, see below
_PACKAGES_AT_BUILD = ("packages are installed when the image is built, on the host: the guest has no way out "
                      "while cloud-init runs")
_POLICY = frozenset({"network", "allowlist", "reset_after_session", "standby"})
_Pinned = TypeVar("_Pinned", NpmPackage, PipPackage)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TEMPLATE_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")


def package_data_dir(name: str) -> Path:
    """`vm_templates` or `cloud-init`, shipped inside the package (editable installs too)."""
    return Path(str(resources.files("agentbox") / "data" / name))


def builtin_templates_dir() -> Path:
    return package_data_dir("vm_templates")


def fragments_dir() -> Path:
    return package_data_dir("cloud-init")


@dataclass(frozen=True)
class TemplateCatalogue:
    builtin_dir: Path
    user_dir: Path

    def all(self) -> tuple[Template, ...]:
        """Every template by name; a user file overrides a built-in of the same name."""
        by_name: dict[str, Template] = {}
        for directory in (self.builtin_dir, self.user_dir):
            for path in sorted(directory.glob("*.yaml")) if directory.is_dir() else ():
                template = load_template(path=path)
                by_name[template.name] = template
        return tuple(sorted(by_name.values(), key=lambda t: t.name))

    def get(self, *, name: str) -> Template:
        # Load only the candidates' files, so one broken unrelated template does not block.
        for directory in (self.user_dir, self.builtin_dir):
            path = directory / f"{name}.yaml"
            if path.is_file():
                template = load_template(path=path)
                if template.name != name:
                    raise ConfigError(f"{path}:1: name: {template.name!r} does not match the file name {name!r}.yaml")
                return template
        known = ", ".join(t.name for t in self.all()) or "none"
        raise NotFound(f"no template named {name!r}", hint=f"known templates: {known} (agentbox template list)")


def load_template(*, path: Path) -> Template:
    doc = load_yaml_file(path=path)
    if not isinstance(doc.value, dict):
        raise doc.error((), "a template must be a mapping with name, description, image, ...")
    top = Fields(doc=doc, key_path=(), allowed=_TOP)
    name = top.string("name")
    if not _TEMPLATE_NAME.match(name):
        raise top.error("name", f"{name!r} is not a valid template name (lowercase letters, digits, '.', '-')")
    if not top.has("image"):
        raise doc.error(("image",), "missing required field",
                        hint="either `build: debian-12` or `url:` plus `sha256:`/`sha256_url:`")
    return Template(
        name=name,
        description=top.string("description", default=""),
        image=_image(top.sub("image", allowed=_IMAGE), doc),
        resources=_resources(top.sub("resources", allowed=_RESOURCES)),
        cloud_init=_cloud_init(top.sub("cloud_init", allowed=_CLOUD_INIT)),
        policy=_policy(top.sub("policy", allowed=_POLICY)),
        budget=_budget(top.sub("budget", allowed=_BUDGET)),
        host_budget=_host_budget(top.sub("budget", allowed=_BUDGET)),
        agents=_agents(top, doc),
        source=str(path),
    )


def _image(fields: Fields, doc: YamlDoc) -> ImageSource:
    if fields.has("build"):
        if fields.has("url") or fields.has("sha256") or fields.has("sha256_url"):
            raise fields.error("build", "give either `build` or `url`, not both")
        return BuildRecipe(recipe=fields.string("build"), packages=_packages(fields),
                           npm=tuple(sorted(_pinned(fields, "npm", parse_npm_spec))),
                           pip=tuple(sorted(_pinned(fields, "pip", parse_pip_spec))))
    for key in ("packages", "npm", "pip"):
        if fields.has(key):
            raise fields.error(key, f"a downloaded image is used as it is: {key} needs `build: RECIPE`",
                               hint=f"use `build: debian-12` with `{key}:`, or install them inside the workspace")
    if not fields.has("url"):
        raise doc.error(("image",), "needs `build: RECIPE` or `url:`")
    url = fields.string("url")
    if not url.startswith(("https://", "http://", "file://")):
        raise fields.error("url", f"{url!r} is not an http(s) or file URL")
    sha256 = fields.optional_string("sha256")
    sha256_url = fields.optional_string("sha256_url")
    if (sha256 is None) == (sha256_url is None):
        raise doc.error(("image",), "a downloaded image needs exactly one of `sha256` or `sha256_url`",
                        hint="an image is never used without a checksum")
    if sha256 is not None and not _SHA256.match(sha256.lower()):
        raise fields.error("sha256", "expected 64 hexadecimal characters")
    return DownloadSource(url=url, sha256=sha256.lower() if sha256 else None, sha256_url=sha256_url)


def _packages(fields: Fields) -> tuple[str, ...]:
    names = fields.strings("packages")
    for index, name in enumerate(names):  # refused here, with the file and line, not at the build
        if not is_debian_package_name(name):
            raise fields.doc.error(fields.key_path + ("packages", index),
                                   f"{name!r} is not {DEBIAN_PACKAGE_RULE}",
                                   hint="list package names only, e.g. `packages: [git, jq]`")
    return tuple(sorted(set(names)))


def _pinned(fields: Fields, key: str, parse: Callable[[str], _Pinned]) -> list[_Pinned]:
    """`npm:` / `pip:` entries, each pinned to one exact version, refused at their line."""
    parsed: dict[str, _Pinned] = {}
    for index, text in enumerate(fields.strings(key)):
        try:
            package = parse(text)
        except InvalidInput as exc:
            raise fields.doc.error(fields.key_path + (key, index), exc.message, hint=exc.hint) from None
        if package.name in parsed and parsed[package.name] != package:
            raise fields.doc.error(fields.key_path + (key, index), f"{package.name} is pinned twice "
                                   f"({parsed[package.name].version} and {package.version})", hint="keep one version")
        parsed[package.name] = package
    return list(parsed.values())


def _agents(top: Fields, doc: YamlDoc) -> tuple[AgentSpec, ...]:
    """`agent:` is one mapping, or a list of them (a template with several agents; the first
    is the default). Each needs a command and a one-line description."""
    raw = top.value.get("agent")
    if raw is None:
        return ()
    if isinstance(raw, dict):
        paths: list[tuple[str | int, ...]] = [("agent",)]
    elif isinstance(raw, list) and raw:
        paths = [("agent", index) for index in range(len(raw))]
    else:
        raise top.error("agent", "expected a mapping (command, description, providers, api_hosts) or a list of them")
    agents: list[AgentSpec] = []
    for key_path in paths:
        fields = Fields(doc=doc, key_path=key_path, allowed=_AGENT)
        agent = _agent(fields, default_name=str(top.value["name"]) if len(paths) == 1 else None)
        if any(known.name == agent.name for known in agents):
            raise fields.error("name", f"two agents are named {agent.name!r}", hint="give each agent its own name")
        agents.append(agent)
    return tuple(agents)


def _agent(fields: Fields, *, default_name: str | None) -> AgentSpec:
    name = fields.string("name", default=default_name)
    if not _TEMPLATE_NAME.match(name):
        raise fields.error("name", f"{name!r} is not a valid agent name (lowercase letters, digits, '.', '-')")
    description = fields.string("description")
    if "\n" in description.strip() or len(description.strip()) > AGENT_DESCRIPTION_MAX:
        raise fields.error("description", f"expected one line of at most {AGENT_DESCRIPTION_MAX} characters",
                           hint="the wizard shows it on one line as the agent's choice")
    providers = fields.strings("providers")
    for index, provider in enumerate(providers):
        if provider not in PROVIDERS:
            raise fields.doc.error(fields.key_path + ("providers", index),
                                   f"{provider!r} is not a provider agentbox knows",
                                   hint=f"one of {', '.join(PROVIDERS)}")
    hosts = fields.strings("api_hosts")
    for index, host in enumerate(hosts):
        if not _HOST_NAME.match(host):
            raise fields.doc.error(fields.key_path + ("api_hosts", index), f"{host!r} is not a host name",
                                   hint="a DNS name such as api.anthropic.com (no scheme, port or path)")
    if providers and not hosts:
        raise fields.error("api_hosts", "an agent with providers needs the API host(s) they are reached at")
    return AgentSpec(name=name, command=fields.string("command"), description=description.strip(),
                     providers=tuple(dict.fromkeys(providers)), api_hosts=tuple(dict.fromkeys(hosts)))


def _resources(fields: Fields) -> Resources:
    default = Resources()
    return Resources(
        vcpus=fields.integer("vcpus", default=default.vcpus, minimum=1, maximum=64),
        memory_mib=fields.integer("memory_mib", default=default.memory_mib, minimum=256, maximum=262144),
        disk_gib=fields.integer("disk_gib", default=default.disk_gib, minimum=4, maximum=4096),
    )


def _cloud_init(fields: Fields) -> CloudInitSpec:
    if fields.has("packages"):
        raise fields.error("packages", _PACKAGES_AT_BUILD, hint="move the list under `image:` as `packages: [...]`")
    return CloudInitSpec(
        fragments=fields.strings("fragments"),
        runcmd=fields.strings("runcmd"),
        write_files=fields.mappings("write_files"),
    )


def _budget(fields: Fields) -> ApiBudget:
    """`budget: {requests: N, bytes: N, tokens: N}`: per session, enforced by the credential
    gateway; a missing or 0 count is no limit."""
    return ApiBudget(**{key: fields.integer(key, default=0, minimum=0, maximum=_BUDGET_MAX) for key in _API_BUDGET})


def _host_budget(fields: Fields) -> HostBudget:
    """`budget: {egress_bytes: 100M, disk_write_bytes: 2G, cpu_seconds: 1h, on_exceeded: end}`:
    per session, enforced on the host (sizes and durations as `agentbox budget` takes them)."""
    amounts: dict[str, int] = {}
    for key, parse in (("egress_bytes", parse_size), ("disk_write_bytes", parse_size), ("cpu_seconds", parse_seconds)):
        raw = fields.value.get(key, 0)
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise fields.error(key, f"expected a size or a number, got {type(raw).__name__}")
        try:
            amounts[key] = parse(text=raw, what=key)
        except InvalidInput as exc:
            raise fields.error(key, exc.message, hint=exc.hint) from None
    raw_policy = fields.value.get("on_exceeded", "end")
    try:
        on_exceeded = OnExceeded(raw_policy)
    except ValueError:
        raise fields.error("on_exceeded", f"{raw_policy!r} is not one of end, pause",
                           hint="end: receipt, then reset as the policy says; pause: the guest is paused") from None
    return HostBudget(on_exceeded=on_exceeded, **amounts)


def _policy(fields: Fields) -> PolicyDefaults:
    raw = fields.value.get("network", "off")
    if raw is False:  # YAML 1.1 reads a bare `off` as false
        raw = "off"
    try:
        mode = NetworkMode(raw)
    except ValueError:
        raise fields.error("network", f"{raw!r} is not one of off, allowlist, learn, open") from None
    allowlist = fields.strings("allowlist")
    for entry in allowlist:  # refused here, with the file and line, not at the first create
        try:
            parse_allow_entry(text=entry)
        except InvalidInput as exc:
            raise fields.error("allowlist", exc.message, hint=exc.hint) from None
    return PolicyDefaults(
        network=mode,
        allowlist=allowlist,
        reset_after_session=fields.boolean("reset_after_session", default=True),
        standby=fields.boolean("standby", default=False),
    )


def save_template_policy(*, user_dir: Path, name: str, base: Template, mode: NetworkMode,
                         allowlist: tuple[str, ...]) -> Path:
    """Write the user template `name` with this network policy; returns its file. An existing
    user template of that name keeps everything else; otherwise it starts as a copy of
    `base` (its YAML file). The result is loaded back, so a file agentbox cannot read is never left."""
    if not _TEMPLATE_NAME.match(name):
        raise InvalidInput(f"{name!r} is not a valid template name",
                           hint="lowercase letters, digits, '.' and '-', starting with a letter or digit")
    path = user_dir / f"{name}.yaml"
    source = path if path.is_file() else Path(base.source)
    try:
        document = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{source}: cannot read the template to start from ({exc})") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{source}:1: a template must be a mapping")
    found = document.get("policy")
    policy: dict[str, object] = found if isinstance(found, dict) else {}
    document = {**document, "name": name, "policy": {**policy, "network": mode.value, "allowlist": list(allowlist)}}
    header = f"# written by `agentbox net propose --save {name}` (from {source})\n"
    old = path.read_bytes() if path.is_file() else None
    user_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(path=path, data=(header + yaml.safe_dump(document, sort_keys=False)).encode(), mode=0o644)
    try:
        load_template(path=path)
    except BaseException:
        if old is None:
            path.unlink(missing_ok=True)
        else:
            write_atomically(path=path, data=old, mode=0o644)
        raise
    return path
