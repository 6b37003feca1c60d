"""Running external tools and removing work trees, safely and cancellably."""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

from agentbox.errors import ImageError, PermissionDenied, ToolFailed
from agentbox.model.progress import CancelToken

TOOLS_HINT = "apt-get install debootstrap e2fsprogs qemu-utils"
_POLL_S = 0.25
_TERM_GRACE_S = 10.0
_TAIL_LINES = 12
# Tools live in sbin, which a user's PATH (or `su` without `-`) often lacks.
_EXTRA_PATH = ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin")


def find_tool(name: str, *, package: str) -> str:
    """Absolute path of an external program, or ImageError saying which package has it."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_PATH])
    found = shutil.which(name, path=search)
    if found is None:
        raise ImageError(
            f"{name} is not installed (it is in the {package} package)",
            hint=TOOLS_HINT,
        )
    return found


def require_root_and_tools(*, needs_root: str, hint: str, tools: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Raise before any work if this process cannot build: root (`needs_root` says why) and
    each (tool, package); returns each tool's absolute path."""
    if os.geteuid() != 0:
        raise PermissionDenied(needs_root, hint=hint)
    return {tool: find_tool(tool, package=package) for tool, package in tools}


def run_tool(
    argv: list[str],
    *,
    cancel: CancelToken,
    env: Mapping[str, str] | None = None,
    capture_stdout: bool = False,
    on_line: Callable[[str], None] | None = None,
) -> str:
    """Run `argv` (never through a shell); like `subprocess.run(check=True)`, but cancellable.

    Returns stdout when `capture_stdout`, else "" (stdout is then merged into the captured
    stderr, whose last lines go into the ToolFailed raised on a non-zero exit). `on_line`
    gets the latest output line now and then, in the calling thread, for progress details.
    """
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if capture_stdout else subprocess.STDOUT,
        env=dict(env) if env is not None else None,
        # Own process group: a cancel stops the tool's children too (dpkg under debootstrap).
        start_new_session=True,
    )
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    stdout_parts: list[bytes] = []
    readers: list[threading.Thread] = []
    if capture_stdout:
        assert proc.stdout is not None and proc.stderr is not None
        readers.append(_reader(proc.stdout, lambda raw: stdout_parts.append(raw)))
        readers.append(_reader(proc.stderr, lambda raw: _keep_line(tail, raw)))
    else:
        assert proc.stdout is not None
        readers.append(_reader(proc.stdout, lambda raw: _keep_line(tail, raw)))
    try:
        last_reported = ""
        while True:
            try:
                proc.wait(timeout=_POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
            cancel.raise_if_cancelled()
            if on_line is not None and tail and tail[-1] != last_reported:
                last_reported = tail[-1]
                on_line(last_reported)
    except BaseException:
        _stop(proc)
        raise
    finally:
        for reader in readers:
            reader.join(timeout=5)
    if proc.returncode != 0:
        shown = "\n".join(f"  {line}" for line in tail) or "  (no output)"
        tool = os.path.basename(argv[0])
        raise ToolFailed(f"{tool} failed (exit code {proc.returncode}):\n{shown}")
    return b"".join(stdout_parts).decode("utf-8", errors="replace")


def _reader(stream: IO[bytes], sink: Callable[[bytes], None]) -> threading.Thread:
    def pump() -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                sink(raw)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def _keep_line(tail: collections.deque[str], raw: bytes) -> None:
    line = raw.decode("utf-8", errors="replace").rstrip()
    if line:
        tail.append(line)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, _TERM_GRACE_S), (signal.SIGKILL, _TERM_GRACE_S)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def mounts_below(path: Path) -> list[Path]:
    """Mount points at or below `path` (Linux /proc/self/mountinfo), deepest first."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    top = str(path.resolve())
    found = []
    for line in lines:
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        point = _unescape_mount(fields[4])
        if point == top or point.startswith(top + "/"):
            found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _unescape_mount(text: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes (\040 ...).
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and text[i + 1 : i + 4].isdigit() and i + 4 <= len(text):
            out.append(chr(int(text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def remove_tree(path: Path) -> None:
    """Delete a work or image directory, never reaching into file systems mounted inside it.

    A killed debootstrap can leave /proc, /sys or bind-mounted /dev nodes mounted in its
    target; those are detached first, and if one cannot be, nothing is deleted.
    """
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    stuck = mounts_below(path)
    if stuck:
        umount = shutil.which("umount", path=os.pathsep.join(_EXTRA_PATH))
        for point in stuck:
            if umount is not None:
                subprocess.run([umount, "--lazy", str(point)], capture_output=True, check=False)
        stuck = mounts_below(path)
    if stuck:
        raise ImageError(
            f"cannot clean up {path}: {stuck[0]} is still mounted",
            hint=f"unmount it (umount --lazy {stuck[0]}), then remove {path}",
        )
    _make_writable(str(path))
    shutil.rmtree(path, onerror=_retry_writable)


def _make_writable(directory: str) -> None:
    # Images are stored 0555/0444; the owner may always restore write permission.
    try:
        os.chmod(directory, 0o755)
    except OSError:
        pass


def _retry_writable(func: Callable[..., object], failed: str, exc_info: tuple[object, BaseException, object]) -> None:
    # Called by rmtree for an entry it could not remove: its parent directory (a real
    # directory rmtree is walking, never a symlink) is read-only; open it up and retry once.
    if func not in (os.rmdir, os.unlink) or not isinstance(exc_info[1], PermissionError):
        raise exc_info[1]
    _make_writable(os.path.dirname(failed))
    func(failed)
