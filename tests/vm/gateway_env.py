"""A local fake provider wired into the vm tests' settings: api.anthropic.com and
api.openai.com pinned to 127.0.0.1 (`egress_hosts`), the fake's test CA as the gateway's
`gateway_ca_bundle`, its port as `gateway_upstream_port`, and the real key stored for both
providers in the key file (never the keyring). Used by test_gateway.py and test_agents.py;
a workspace created inside the block gets a gateway that reaches the fake."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agentbox.stores.api_keys import NO_KEYRING_ENV, ApiKeyStore
from tests.fake_provider import FakeProvider, fake_provider
from tests.vm.conftest import EGRESS_TEST_HOST, VmEnv

PINNED = ("api.anthropic.com", "api.openai.com")


@contextmanager
def provider_for_guests(vm_env: VmEnv, *, root: Path, key: str) -> Iterator[FakeProvider]:
    with pytest.MonkeyPatch.context() as mp, fake_provider(key=key, ca_path=root / "ca.pem") as fake:
        mp.setenv(NO_KEYRING_ENV, "1")  # the supervisor (and its gateway) inherit it
        settings = vm_env.paths.settings_file
        original = settings.read_text()
        hosts = "".join(f"  {host}: 127.0.0.1\n" for host in PINNED)
        settings.write_text(original.replace(
            f"egress_hosts:\n  {EGRESS_TEST_HOST}: 127.0.0.1\n",
            f"egress_hosts:\n  {EGRESS_TEST_HOST}: 127.0.0.1\n{hosts}")
            + f"gateway_ca_bundle: {fake.ca_path}\ngateway_upstream_port: {fake.port}\n")
        keys = ApiKeyStore(config_dir=vm_env.paths.config_dir, use_keyring=False)
        for provider in ("anthropic", "openai"):
            keys.set(provider=provider, key=key)
        try:
            yield fake
        finally:
            settings.write_text(original)
            for provider in ("anthropic", "openai"):
                keys.remove(provider=provider)
