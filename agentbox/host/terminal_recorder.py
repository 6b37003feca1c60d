"""Running a terminal program (the system ssh) while keeping a copy of what it shows.

On a terminal, the program gets a pseudo-terminal of its own as its controlling terminal
(`setsid --ctty`, so window-size changes and a closed terminal's hangup reach it as they
would without us) and agentbox relays bytes both ways with the user's terminal in raw
mode: keys, Ctrl-C included, go to the program unchanged. Without a terminal (a script
piping into `agentbox ssh NAME -- CMD`) stdin passes straight through and only stdout and
stderr are relayed. Either way each chunk of output goes to `sink` with its time.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import shutil
import struct
import subprocess
import termios
import threading
import time
import tty
from collections.abc import Callable, Sequence

from agentbox.errors import AgentboxError

OutputSink = Callable[[float, bytes], None]  # seconds since start, the bytes shown
_CHUNK = 65536
_POLL_S = 0.25  # how often a changed window size is noticed


def record_program(*, argv: Sequence[str], sink: OutputSink, stdin_fd: int = 0, stdout_fd: int = 1,
                   stderr_fd: int = 2) -> int:
    """Run `argv` until it exits, relaying its output to `stdout_fd` and `sink`; its exit code."""
    if os.isatty(stdin_fd) and os.isatty(stdout_fd):
        return _through_pty(argv=argv, sink=sink, stdin_fd=stdin_fd, stdout_fd=stdout_fd)
    return _through_pipes(argv=argv, sink=sink, stdin_fd=stdin_fd, stdout_fd=stdout_fd, stderr_fd=stderr_fd)


def window_size(fd: int) -> tuple[int, int]:
    """(columns, lines) of the terminal on `fd`; 80x24 when it is not one."""
    try:
        lines, columns, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return 80, 24
    return (columns or 80), (lines or 24)


def _set_window_size(fd: int, size: tuple[int, int]) -> None:
    columns, lines = size
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))


def _spawn(argv: Sequence[str], **streams: int) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(list(argv), **streams)  # type: ignore[call-overload]
    except OSError as exc:
        raise AgentboxError(f"could not run {argv[0]}: {exc.strerror}",
                            hint="sudo apt-get install openssh-client util-linux") from None


def _through_pty(*, argv: Sequence[str], sink: OutputSink, stdin_fd: int, stdout_fd: int) -> int:
    setsid = shutil.which("setsid")
    if setsid is None:
        raise AgentboxError("setsid is missing: a recorded session needs it",
                            hint="sudo apt-get install util-linux (or set record_sessions: false)")
    size = window_size(stdout_fd)
    master, slave = os.openpty()
    try:
        _set_window_size(slave, size)
        # --wait: should setsid have to fork, the exit code is still the program's.
        process = _spawn([setsid, "--ctty", "--wait", *argv], stdin=slave, stdout=slave, stderr=slave)
    finally:
        os.close(slave)
    saved = termios.tcgetattr(stdin_fd)
    started = time.monotonic()
    try:
        tty.setraw(stdin_fd)
        reading_stdin = True
        while True:
            ready, _, _ = select.select([master, stdin_fd] if reading_stdin else [master], [], [], _POLL_S)
            now = window_size(stdout_fd)
            if now != size:
                size = now
                _set_window_size(master, size)
            if master in ready:
                try:
                    data = os.read(master, _CHUNK)
                except OSError as exc:  # EIO: the program and everything it started let go of the terminal
                    if exc.errno != errno.EIO:
                        raise
                    data = b""
                if not data:
                    break
                _write_all(stdout_fd, data)
                sink(time.monotonic() - started, data)
            if reading_stdin and stdin_fd in ready:
                data = os.read(stdin_fd, _CHUNK)
                if data:
                    _write_all(master, data)
                else:
                    reading_stdin = False
    finally:
        termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
        os.close(master)  # the program gets a hangup if it is still there
    return process.wait()


def _through_pipes(*, argv: Sequence[str], sink: OutputSink, stdin_fd: int, stdout_fd: int, stderr_fd: int) -> int:
    process = _spawn(argv, stdin=stdin_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started = time.monotonic()
    lock = threading.Lock()

    def relay(source: int, target: int) -> None:
        while data := os.read(source, _CHUNK):
            _write_all(target, data)
            with lock:
                sink(time.monotonic() - started, data)

    assert process.stdout is not None and process.stderr is not None
    threads = [threading.Thread(target=relay, args=(pipe.fileno(), target), daemon=True)
               for pipe, target in ((process.stdout, stdout_fd), (process.stderr, stderr_fd))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    process.stdout.close()
    process.stderr.close()
    return process.wait()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [])
