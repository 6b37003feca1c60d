"""The terminal relay with a real pseudo-terminal standing for the user's terminal."""

from __future__ import annotations

import os
import termios
import threading
import time
from collections.abc import Iterator

import pytest

from agentbox.host.terminal_recorder import record_program

from ..pty_terminal import UserTerminal, open_user_terminal


@pytest.fixture()
def user() -> Iterator[UserTerminal]:
    terminal = open_user_terminal(columns=100, lines=30)
    yield terminal
    terminal.close()


def run_in_thread(argv: list[str], user: UserTerminal) -> tuple[threading.Thread, dict[str, object]]:
    result: dict[str, object] = {"chunks": []}

    def sink(at: float, data: bytes) -> None:
        result["chunks"].append((at, data))  # type: ignore[union-attr]

    def target() -> None:
        result["code"] = record_program(argv=argv, sink=sink, stdin_fd=user.slave, stdout_fd=user.slave)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, result


def test_what_is_typed_reaches_the_program_and_what_it_shows_is_recorded(user: UserTerminal) -> None:
    thread, result = run_in_thread(["sh", "-c", 'printf "name? "; read x; echo "got:$x"; exit 3'], user)
    user.read_until(b"name? ")
    user.type("hello\r")
    user.read_until(b"got:hello")
    thread.join(20)
    assert result["code"] == 3
    recorded = b"".join(data for _, data in result["chunks"])  # type: ignore[union-attr]
    assert b"name? " in recorded and b"hello" in recorded and b"got:hello" in recorded  # the echo, then the answer
    times = [at for at, _ in result["chunks"]]  # type: ignore[union-attr]
    assert times == sorted(times)


def test_the_program_has_the_pty_as_its_controlling_terminal_and_the_window_size(user: UserTerminal) -> None:
    thread, result = run_in_thread(["sh", "-c", "stty size; ps -o tty= -p $$; read x; stty size"], user)
    screen = user.read_until(b"pts/")
    assert b"30 100" in screen  # the user's window size, not 80x24
    user.resize(120, 40)
    time.sleep(1.0)  # the relay looks at the size a few times a second
    user.type("\r")
    user.read_until(b"40 120")
    thread.join(20)
    assert result["code"] == 0


def test_ctrl_c_goes_to_the_program_not_to_agentbox(user: UserTerminal) -> None:
    thread, result = run_in_thread(["sh", "-c", "trap 'echo caught-int; exit 7' INT; echo ready; "
                                                "while :; do sleep 0.1; done"], user)
    user.read_until(b"ready")
    user.type("\x03")
    user.read_until(b"caught-int")
    thread.join(20)
    assert result["code"] == 7


def test_the_users_terminal_mode_is_restored_afterwards(user: UserTerminal) -> None:
    before = termios.tcgetattr(user.slave)
    thread, _ = run_in_thread(["true"], user)
    thread.join(20)
    assert termios.tcgetattr(user.slave) == before


def test_without_a_terminal_stdout_and_stderr_are_relayed_and_recorded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    chunks: list[bytes] = []
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    stdin_r, stdin_w = os.pipe()
    os.write(stdin_w, b"piped-in\n")
    os.close(stdin_w)
    code = record_program(argv=["sh", "-c", "read x; echo out:$x; echo err >&2; exit 4"],
                          sink=lambda _at, data: chunks.append(data), stdin_fd=stdin_r, stdout_fd=out_w,
                          stderr_fd=err_w)
    for fd in (out_w, err_w, stdin_r):
        os.close(fd)
    assert code == 4
    assert os.read(out_r, 1000) == b"out:piped-in\n"
    assert os.read(err_r, 1000) == b"err\n"
    assert sorted(chunks) == [b"err\n", b"out:piped-in\n"]
