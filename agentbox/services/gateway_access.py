"""How a guest reaches the credential gateway: a phantom token minted on the host and a
login-shell profile in the guest that points each provider's clients at the gateway.

The token is minted whenever the guest gets a fresh state (create, start, each reset or
restore) and at each session start, and revoked when a session ends; the gateway
(agentbox/gateway) accepts only the current one. The guest gets only the token and base
URLs, in `/etc/profile.d/agentbox-gateway.sh` (0644, read by every login shell, `bash -lc`
included); a real key never goes there.
"""

from __future__ import annotations

import shlex

from agentbox.errors import GuestError
from agentbox.model.guest import GUEST_USER
from agentbox.model.progress import CancelToken
from agentbox.model.providers import PROVIDERS
from agentbox.services.context import ServiceContext
from agentbox.services.ssh_access import ssh_target
from agentbox.model.api_use import ApiUse
from agentbox.stores.gateway_tokens import USAGE_FILE, GatewayToken, GatewayTokenFile, read_usage
from agentbox.stores.records import WorkspaceRecord

GUEST_PROFILE = "/etc/profile.d/agentbox-gateway.sh"


def guest_profile(token: GatewayToken) -> str:
    """The profile's text: the phantom token and the base URLs, for every known provider."""
    lines = ["# Written by agentbox at session start and at every reset. The API keys stay on the host:",
             "# this token is valid only through agentbox's credential gateway, for this session.",
             f"export AGENTBOX_GATEWAY_TOKEN={shlex.quote(token.token)}"]
    for provider in PROVIDERS:
        lines.append(f"export {provider.key_env}={shlex.quote(token.token)}")
        lines += [f"export {name}={shlex.quote(provider.guest_base_url())}" for name in provider.base_url_env]
    return "\n".join(lines) + "\n"


# Claude Code asks, before its prompt, whether to use an ANTHROPIC_API_KEY it has not seen
# ("Detected a custom API key in your environment"), and remembers the answer in the user's
# ~/.claude.json by the key's last 20 characters. The phantom token is new every session, so
# each one is approved there as it is installed (where an agents template wrote that file).
# Python: cloud-init needs it, so every guest has it. A failure only brings the question back.
_APPROVE_FOR_CLAUDE = """
import json, os, sys
path, suffix = sys.argv[1], sys.argv[2]
with open(path, encoding="utf-8") as file:
    config = json.load(file)
answers = config.setdefault("customApiKeyResponses", {})
answers.setdefault("rejected", [])
if suffix not in answers.setdefault("approved", []):
    answers["approved"].append(suffix)
owner = os.stat(path)
with open(path + ".agentbox", "w", encoding="utf-8") as file:
    json.dump(config, file)
os.chown(path + ".agentbox", owner.st_uid, owner.st_gid)
os.chmod(path + ".agentbox", 0o600)
os.replace(path + ".agentbox", path)
"""
CLAUDE_SUFFIX = 20


def profile_install_script(token: GatewayToken, *, home: str = f"/home/{GUEST_USER}") -> str:
    """A root shell command that replaces the profile atomically, mode 0644, and approves the
    token for Claude Code where it is installed."""
    tmp = GUEST_PROFILE + ".tmp"
    config = shlex.quote(f"{home}/.claude.json")
    approve = (f"{{ ! [ -f {config} ] || python3 -c {shlex.quote(_APPROVE_FOR_CLAUDE)} {config} "
               f"{shlex.quote(token.token[-CLAUDE_SUFFIX:])} || true; }}")
    return (f"umask 022 && printf '%s' {shlex.quote(guest_profile(token))} > {tmp} && chmod 0644 {tmp}"
            f" && mv -f {tmp} {GUEST_PROFILE} && {approve}")


class GatewayAccess:
    def __init__(self, *, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def current(self, *, name: str) -> GatewayToken | None:
        """The workspace's live phantom token (None between a session's end and the next mint)."""
        return self._file(name).current()

    def usage(self, *, name: str) -> ApiUse:
        """The current token's API use so far, as the gateway counts it (for a live display)."""
        token = self.current(name=name)
        token_id, use = read_usage(path=self._ctx.records.files(name=name).egress_dir / USAGE_FILE)
        return use if token is not None and token.id == token_id else ApiUse()

    def mint(self, *, record: WorkspaceRecord, session: str = "") -> GatewayToken:
        """A new token (the old one is dead from now on), carrying the record's API budget."""
        # Not audited on its own: each gateway.request record names the token's id.
        return self._file(record.name).mint(workspace=record.name, session=session, budget=record.api_budget)

    def revoke(self, *, name: str) -> None:
        self._file(name).revoke()

    def mint_script(self, *, record: WorkspaceRecord) -> str:
        """Mint a token and return the guest command that installs it, for a caller with an
        SSH round trip of its own (the reset's refresh)."""
        return profile_install_script(self.mint(record=record))

    def mint_and_install(self, *, record: WorkspaceRecord, session: str = "",
                         cancel: CancelToken | None = None) -> GatewayToken:
        token = self.mint(record=record, session=session)
        self.install(record=record, token=token, cancel=cancel)
        return token

    def install(self, *, record: WorkspaceRecord, token: GatewayToken, cancel: CancelToken | None = None) -> None:
        err = bytearray()
        target = ssh_target(record=record, files=self._ctx.records.files(name=record.name))
        code = self._ctx.guest.run_command(target=target, argv=["sudo", "-n", "sh", "-c",
                                                                profile_install_script(token)],
                                           stdout=lambda _: None, stderr=err.extend, timeout_s=60, cancel=cancel)
        if code != 0:
            raise GuestError(f"cannot write {GUEST_PROFILE} in {record.name}: "
                             f"{err.decode(errors='replace').strip()[-300:]}",
                             hint=f"the agents there have no API access until it is; agentbox reset {record.name}")

    def _file(self, name: str) -> GatewayTokenFile:
        return GatewayTokenFile(path=self._ctx.records.files(name=name).gateway_token)
