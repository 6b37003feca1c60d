"""What a guest is asked so a session receipt can list the files it changed.

The clean snapshot leaves a marker file in the guest; at the end of a session the guest is
asked for everything on its root file system modified (mtime) or changed (ctime: chmod,
rename, a back-dated mtime) after that marker. A reset reverts the marker with the rest, and
the host sets the guest clock after every revert, so "newer than the marker" means "since
the clean state". It is the guest's own answer: a compromised guest can lie or stay silent.
"""

from __future__ import annotations

import shlex

MARK_DIR = "/var/lib/agentbox"
CLEAN_MARK = f"{MARK_DIR}/clean-mark"
# Run right before the clean snapshot. `sync` runs even if sudo fails: it protects the
# snapshot (see SnapshotService._sync); the marker only feeds receipts.
MARK_CLEAN_SCRIPT = f"mkdir -p {MARK_DIR} && touch {CLEAN_MARK}"  # as root
MARK_CLEAN_ARGV = ("sh", "-c", "sudo -n sh -c " + shlex.quote(MARK_CLEAN_SCRIPT) + "; sync")

CHANGES_LIMIT = 2000
NO_MARK_EXIT = 3
# One NUL-terminated entry per path: "TYPE SIZE MTIME PATH" (find's %y, %s, %T@, %p).
# -xdev keeps out the outbox and shares (other file systems); the virtual file systems are
# pruned so their mount points do not show up either. head stops find one entry past the
# limit, which tells the host that the list was cut.
_SCRIPT = f"""
[ -e {CLEAN_MARK} ] || exit {NO_MARK_EXIT}
find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path {MARK_DIR} \\) -prune \\
  -o \\( -newer {CLEAN_MARK} -o -cnewer {CLEAN_MARK} \\) -printf '%y %s %T@ %p\\0' 2>/dev/null \\
  | head -z -n {CHANGES_LIMIT + 1}
"""
CHANGES_ARGV = ("sudo", "-n", "sh", "-c", _SCRIPT)
