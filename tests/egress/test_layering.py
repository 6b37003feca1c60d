"""The egress layer stays beside backends/provision/remote: stdlib, model, errors, config."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("libvirt", "paramiko", "textual", "yaml", "agentbox.services", "agentbox.backends", "agentbox.remote",
             "agentbox.provision", "agentbox.images", "agentbox.cli", "agentbox.tui", "agentbox.bootstrap")


def test_the_egress_daemon_and_client_load_nothing_from_other_layers() -> None:
    probe = (
        "import sys, agentbox.egress.daemon, agentbox.egress.client, agentbox.egress.__main__\n"
        f"bad = [m for m in sys.modules if any(m == f or m.startswith(f + '.') for f in {FORBIDDEN!r})]\n"
        "print(','.join(sorted(bad)))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
