"""What a guest needs after it was put back into a saved RAM state: the host's time and
fresh randomness; and a new machine-id, so two sessions (or two clones) are not linkable.

A revert resumes the guest exactly as it was when the snapshot was taken: its clock is that
moment's, and its kernel's random generator holds the same state, so two resets in a row
would hand out the same "random" numbers (keys, nonces, temp names). The Debian cloud
kernel has no vmgenid driver to notice, so agentbox tells the guest itself: set the clock,
mix host randomness into the pool and force the kernel to reseed its CRNG at once.
"""

from __future__ import annotations

import os
import shlex
import struct
import time
from collections.abc import Sequence

SEED_BYTES = 64
_HOST_TIME = struct.Struct("!d")

# perl-base is Essential on Debian and Ubuntu and starts in a fraction of Python's time
# under TCG, which is most of a reset; raw syscalls spare two more programs (`date`).
# Runs as root; its input is the host's time (taken when the command has started) and then
# the seed, so neither shows in `ps`. x86_64 numbers: clock_settime 227, clock_gettime 228;
# 0x5207 = RNDRESEEDCRNG: reseed the CRNG from the pool now (Linux >= 4.17).
_SCRIPT = f"""
use strict;
my $want = {_HOST_TIME.size + SEED_BYTES};
my $data = "";
while (length($data) < $want) {{
    my $got = sysread(STDIN, $data, $want - length($data), length($data));
    die "short input\\n" unless $got;
}}
my $host_time = unpack("d>", substr($data, 0, {_HOST_TIME.size}));
open(my $pool, ">", "/dev/urandom") or die "urandom: $!\\n";
syswrite($pool, substr($data, {_HOST_TIME.size})) == {SEED_BYTES} or die "seed: $!\\n";
ioctl($pool, 0x5207, 0) or die "reseed: $!\\n";
close($pool);
open(my $rnd, "<", "/dev/urandom") or die "urandom: $!\\n";
sysread($rnd, my $id, 16) == 16 or die "machine-id: $!\\n";
close($rnd);
open(my $mid, ">", "/etc/machine-id.agentbox") or die "machine-id: $!\\n";
print $mid unpack("H*", $id), "\\n";
close($mid) or die "machine-id: $!\\n";
chmod(0444, "/etc/machine-id.agentbox");
rename("/etc/machine-id.agentbox", "/etc/machine-id") or die "machine-id: $!\\n";
my $sec = int($host_time);
my $set = pack("q q", $sec, int(($host_time - $sec) * 1e9));
syscall(227, 0, $set) == 0 or die "clock_settime: $!\\n";
my $now = pack("q q", 0, 0);
syscall(228, 0, $now) == 0 or die "clock_gettime: $!\\n";
my ($now_sec, $now_nsec) = unpack("q q", $now);
printf("%d.%09d\\n", $now_sec, $now_nsec);
"""

REFRESH_ARGV = ("sudo", "-n", "perl", "-e", _SCRIPT)


def refresh_argv(*, then: str = "") -> tuple[str, ...]:
    """REFRESH_ARGV, followed by the shell script `then` (run as root) in the same SSH
    round trip, which costs most of a second under TCG."""
    if not then:
        return REFRESH_ARGV
    return ("sudo", "-n", "sh", "-c", f"{shlex.join(REFRESH_ARGV[2:])} && {then}")


def refresh_argv_then_perl(*, then: str) -> tuple[str, ...]:
    """REFRESH_ARGV with the Perl code `then` run after it in the same process (as root, on
    the rest of stdin): under TCG every program started costs the guest ~70 ms, `sh`
    included, and a script of coreutils adds up to more than the SSH login itself."""
    return ("sudo", "-n", "perl", "-e", _SCRIPT + "\n{\n" + then + "\n}\n")


def is_refresh(argv: Sequence[str]) -> bool:
    return any(_SCRIPT in arg for arg in argv)


def refresh_input() -> bytes:
    """stdin for REFRESH_ARGV: the host time now and fresh host randomness."""
    return _HOST_TIME.pack(time.time()) + os.urandom(SEED_BYTES)
