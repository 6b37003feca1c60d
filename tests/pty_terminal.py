"""A pseudo-terminal standing for the user's terminal: what a person would see and type."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import termios
import time
from dataclasses import dataclass, field


@dataclass
class UserTerminal:
    """The far side of a pty pair: what a person would see and type."""

    master: int
    slave: int
    shown: bytearray = field(default_factory=bytearray)

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def read_until(self, needle: bytes, timeout_s: float = 20.0) -> bytes:
        deadline = time.monotonic() + timeout_s
        while needle not in self.shown:
            left = deadline - time.monotonic()
            assert left > 0, f"{needle!r} never shown; the screen has {bytes(self.shown)!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.shown += os.read(self.master, 65536)
                except OSError:
                    break
        return bytes(self.shown)

    def resize(self, columns: int, lines: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


def open_user_terminal(*, columns: int = 100, lines: int = 30) -> UserTerminal:
    master, slave = os.openpty()
    terminal = UserTerminal(master=master, slave=slave)
    terminal.resize(columns, lines)
    return terminal
