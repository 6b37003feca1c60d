"""A warm clone's own identity, given over SSH right after its golden RAM state was restored.

Every clone of one golden state wakes up as the same machine: the golden host key, the
golden bootstrap key in `authorized_keys`, its hostname, its machine-id and its random
generator's state. In one SSH round trip (logged in with the bootstrap key, the golden host
key pinned) agentbox sets the clock, reseeds the RNG and writes a new machine-id (the
refresh, provision/refresh.py), then installs the workspace's own host key (generated and
pinned on the host), makes the workspace's key the only authorized one (so the bootstrap
key stops working) and sets the hostname; sshd is told to reload so every new connection
presents the new key. Nothing else can log in meanwhile: only the bootstrap key, held by
agentbox alone, is authorized until this script replaced it. Create's clean snapshot comes
right after, so the script also leaves the receipts' clean marker and flushes the disk, in
the same round trip (under TCG each SSH handshake costs the guest about a second).
"""

from __future__ import annotations

from agentbox.errors import InvalidInput
from agentbox.model.guest import GUEST_USER
from agentbox.provision.guest_changes import MARK_CLEAN_SCRIPT
from agentbox.provision.keys import KeyPair
from agentbox.provision.refresh import refresh_argv, refresh_input

GOLDEN_HOSTNAME = "agentbox-golden"

# Runs as root after the refresh, on the rest of stdin: three lines (hostname, the
# workspace's public key, the new host key's public line), then the private host key.
_SCRIPT = f"""set -e
IFS= read -r name; IFS= read -r auth; IFS= read -r hostpub
umask 077
rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub
cat > /etc/ssh/ssh_host_ed25519_key
printf '%s\\n' "$hostpub" > /etc/ssh/ssh_host_ed25519_key.pub
chmod 0644 /etc/ssh/ssh_host_ed25519_key.pub
keys=/home/{GUEST_USER}/.ssh/authorized_keys
printf '%s\\n' "$auth" > "$keys.agentbox"
chown {GUEST_USER}:{GUEST_USER} "$keys.agentbox"
mv -f "$keys.agentbox" "$keys"
hostname "$name"
printf '%s\\n' "$name" > /etc/hostname
sed -i "s/{GOLDEN_HOSTNAME}/$name/g" /etc/hosts
listeners() {{ awk '$2 ~ /:0016$/ && $4 == "0A" {{print $10}}' /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort; }}
before=$(listeners)
kill -HUP "$(cat /run/sshd.pid)"
# The reloaded sshd binds anew: until its listener is there, a login is refused.
tries=0
while now=$(listeners); [ -z "$now" ] || [ "$now" = "$before" ]; do
  tries=$((tries + 1))
  [ "$tries" -lt 250 ] || {{ echo "sshd did not listen again within 5 s of its reload" >&2; exit 1; }}
  sleep 0.02
done
{MARK_CLEAN_SCRIPT}
sync
"""


def identity_argv() -> tuple[str, ...]:
    return refresh_argv(then=_SCRIPT)


def identity_input(*, hostname: str, authorized_key: str, host_key: KeyPair) -> bytes:
    """stdin for identity_argv(): the refresh's input, then the identity itself."""
    lines = (hostname, authorized_key, host_key.public_openssh)
    for line in lines:
        if not line or any(ch in line for ch in "\r\n\0"):
            raise InvalidInput("a clone's hostname and keys must each be one non-empty line")
    private = host_key.private_openssh if host_key.private_openssh.endswith("\n") else host_key.private_openssh + "\n"
    return refresh_input() + ("\n".join(lines) + "\n" + private).encode("ascii")
