"""The pieces of remote libvirt hosts that need no host: the settings, the generated ssh
config with its ProxyJump, and what shares say on a remote host."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agentbox.config.paths import AppPaths
from agentbox.config.settings import load_settings
from agentbox.errors import ConfigError
from agentbox.model.shares import HostFacts, ShareMechanism, rank_mechanisms
from agentbox.model.template import Resources
from agentbox.stores.records import WorkspaceFiles, WorkspaceRecord
from agentbox.stores.ssh_config import host_block, jump_alias

URI = "qemu+ssh://root@far.example:2200/system?keyfile=/keys/far&known_hosts=/keys/far_hosts"


def _settings(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    paths = AppPaths.under(root=tmp_path)
    paths.config_dir.mkdir(parents=True)
    paths.settings_file.write_text(text)
    return load_settings(paths=paths, env={})


def test_the_remote_pool_is_a_setting(tmp_path: Path) -> None:
    assert _settings(tmp_path, f"libvirt_uri: '{URI}'\nremote_pool: images-2\n").remote_pool == "images-2"


def test_a_bad_pool_name_is_refused_at_its_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        _settings(tmp_path, "remote_pool: 'a b/c'\n")
    assert "remote_pool" in str(raised.value)


def _record(remote_uri: str) -> WorkspaceRecord:
    return WorkspaceRecord(name="far", domain="agentbox-far", template="debian-12", image_id="i", created="t",
                           ssh_port=40022, resources=Resources(), storage_dir="/s",
                           host_key_public="ssh-ed25519 AAAA", remote_uri=remote_uri)


def test_the_ssh_config_of_a_remote_workspace_jumps_through_its_host(tmp_path: Path) -> None:
    block = host_block(record=_record(URI), files=WorkspaceFiles(directory=tmp_path))
    config = tmp_path / "config"
    config.write_text(block)
    # What OpenSSH itself makes of it: the guest through the jump, the jump with its own key and pins.
    guest = subprocess.run(["ssh", "-G", "-F", str(config), "agentbox-far"], check=True, capture_output=True,
                           text=True).stdout.splitlines()
    assert f"proxyjump {jump_alias('far')}" in guest and "hostname 127.0.0.1" in guest
    jump = subprocess.run(["ssh", "-G", "-F", str(config), jump_alias("far")], check=True, capture_output=True,
                          text=True).stdout.splitlines()
    assert {"hostname far.example", "port 2200", "user root", "identityfile /keys/far",
            "userknownhostsfile /keys/far_hosts", "stricthostkeychecking true"} <= set(jump)


def test_a_local_workspace_has_no_jump(tmp_path: Path) -> None:
    assert "ProxyJump" not in host_block(record=_record(""), files=WorkspaceFiles(directory=tmp_path))


def test_on_a_remote_host_live_shares_say_why_not_and_copies_work() -> None:
    facts = HostFacts(libvirt_version=9000000, virtiofsd="/usr/libexec/virtiofsd", virtiofsd_readonly=False,
                      privileged=True, local=False, guest_9p=False, mkfs_ext4=True)
    choices = {choice.mechanism: choice for choice in rank_mechanisms(facts=facts)}
    for live in (ShareMechanism.VIRTIOFS_READONLY, ShareMechanism.VIRTIOFS_RO_BIND):
        assert not choices[live].available
        assert "remote libvirt host" in choices[live].reason and "copy-disk" in choices[live].reason
    assert choices[ShareMechanism.COPY_DISK].available
    assert "uploaded" in choices[ShareMechanism.COPY_DISK].reason


def test_hosts_lists_libvirt_uris_and_refuses_one_not_over_ssh(tmp_path: Path) -> None:
    assert _settings(tmp_path, f"hosts: ['{URI}', 'qemu:///system']\n").hosts == (URI, "qemu:///system")
    with pytest.raises(ConfigError) as raised:
        _settings(tmp_path / "bad", "hosts: ['qemu+tcp://far.example/system']\n")
    assert "hosts" in str(raised.value) and "over SSH only" in str(raised.value)
