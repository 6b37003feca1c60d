#!/usr/bin/env bash
# Sets up everything agentbox needs on Debian/Ubuntu, idempotently, then either starts
# agentbox with the default template (`run`) or runs the whole test suite (`test`).
#   scripts/setup.sh run      install, create the workspace "workspace" (default template) if needed, open the TUI
#   scripts/setup.sh test     install, then run every test, real-VM tests included
set -euo pipefail

mode="${1:-run}"
cd "$(dirname "$0")/.."
repo="$(pwd)"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

PACKAGES=(qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-dev pkg-config debootstrap
          e2fsprogs bindfs openssh-client openssh-server python3-venv python3-dev gcc tmux
          dpkg-dev zsh fish   # packaging tests: .deb build (dpkg-shlibdeps), completion in each shell
          mount util-linux)   # image layers: loop mount, fstrim (on most systems already there)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing system packages: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

# libvirt daemons: systemd where there is one, else start them directly (containers, CI).
if ! virsh -c qemu:///system version >/dev/null 2>&1; then
  echo "== starting libvirt"
  if [ -d /run/systemd/system ]; then
    $SUDO systemctl start virtlogd libvirtd || $SUDO systemctl start virtqemud
  else
    pgrep -x virtlogd >/dev/null || $SUDO virtlogd -d
    pgrep -x libvirtd >/dev/null || $SUDO libvirtd -d
  fi
  for _ in $(seq 1 30); do
    virsh -c qemu:///system version >/dev/null 2>&1 && break
    sleep 1
  done
  virsh -c qemu:///system version >/dev/null
fi
if [ "$(id -u)" -ne 0 ] && ! id -nG | grep -qw libvirt; then
  echo "== adding $(id -un) to the libvirt group (log out and in again for it to apply)"
  $SUDO adduser "$(id -un)" libvirt >/dev/null
fi

# Disks and images live where QEMU's user can reach them (not in a 0700 home).
storage=/var/lib/libvirt/images/agentbox
if [ ! -d "$storage/workspaces" ]; then
  $SUDO install -d -m 0755 "$storage" "$storage/images"
  # Members of group libvirt may create workspaces; QEMU's user only traverses.
  $SUDO install -d -m 3771 -g libvirt "$storage/workspaces"
fi

# The venv: recreated only when pyproject.toml changes.
stamp=".venv/.agentbox-deps"
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== preparing the Python environment (.venv)"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[test]"
  echo "$want" > "$stamp"
fi

case "$mode" in
  run)
    # Building the default image needs root once; it is then shared from the storage dir.
    if ! .venv/bin/agentbox image list --json | grep -q '"template": "debian-12"'; then
      $SUDO "$repo/.venv/bin/agentbox" image build debian-12
    fi
    state="$(.venv/bin/agentbox list --json | .venv/bin/python -c \
      'import json,sys; print(next((w["state"] for w in json.load(sys.stdin) if w["name"] == "workspace"), "absent"))')"
    case "$state" in
      absent) .venv/bin/agentbox create workspace ;;
    esac
    # The full-screen interface, with the workspace ready (Enter opens a shell in it).
    exec .venv/bin/agentbox tui
    ;;
  test)
    exec .venv/bin/pytest -m "" -p no:cacheprovider tests
    ;;
  *)
    echo "usage: $0 run|test" >&2
    exit 2
    ;;
esac
