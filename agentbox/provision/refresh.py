"""What a guest needs after it was put back into a saved RAM state: the host's time and
fresh randomness.

A revert resumes the guest exactly as it was when the snapshot was taken: its clock is that
moment's, and its kernel's random generator holds the same state, so two resets in a row
would hand out the same "random" numbers (keys, nonces, temp names). The Debian cloud
kernel has no vmgenid driver to notice, so agentbox tells the guest itself: set the clock,
mix host randomness into the pool and force the kernel to reseed its CRNG at once.
"""

from __future__ import annotations

import os
import struct
import time

SEED_BYTES = 64
# RNDRESEEDCRNG = _IO('R', 0x07): reseed the CRNG from the pool now (Linux >= 4.17).
_RNDRESEEDCRNG = 0x5207
_HOST_TIME = struct.Struct("!d")

# Runs as root in the guest (-I -S: start fast, ignore the environment). Its input is the
# host's time, taken when the command has started, then the seed; neither shows in `ps`.
_SCRIPT = f"""
import fcntl, os, struct, sys, time
data = sys.stdin.buffer.read({_HOST_TIME.size + SEED_BYTES})
time.clock_settime(time.CLOCK_REALTIME, struct.unpack("!d", data[:{_HOST_TIME.size}])[0])
fd = os.open("/dev/urandom", os.O_WRONLY)
try:
    os.write(fd, data[{_HOST_TIME.size}:])
    fcntl.ioctl(fd, {_RNDRESEEDCRNG:#x})
finally:
    os.close(fd)
print(f"{{time.time():.6f}}")
"""

REFRESH_ARGV = ("sudo", "-n", "python3", "-I", "-S", "-c", _SCRIPT)


def refresh_input() -> bytes:
    """stdin for REFRESH_ARGV: the host time now and fresh host randomness."""
    return _HOST_TIME.pack(time.time()) + os.urandom(SEED_BYTES)
