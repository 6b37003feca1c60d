"""How services reach into a guest. The real one is SSH (remote/); tests may inject another."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from agentbox.model.progress import CancelToken, ProgressCallback
from agentbox.remote import ssh
from agentbox.remote.ssh import SshTarget


class GuestAccess(Protocol):
    def wait_until_ready(
        self, *, target: SshTarget, timeout_s: float, cancel: CancelToken,
        on_progress: ProgressCallback, check_alive: Callable[[], None] | None = None,
    ) -> None: ...

    def run_command(
        self, *, target: SshTarget, argv: Sequence[str], stdout: Callable[[bytes], None],
        stderr: Callable[[bytes], None], stdin: bytes | Callable[[], bytes] | None = None,
        timeout_s: float | None = None,
        cancel: CancelToken | None = None,
    ) -> int: ...


class SshGuestAccess:
    """GuestAccess over paramiko with the pinned host key."""

    def wait_until_ready(self, **kwargs) -> None:  # type: ignore[no-untyped-def]
        ssh.wait_until_ready(**kwargs)

    def run_command(self, **kwargs) -> int:  # type: ignore[no-untyped-def]
        return ssh.run_command(**kwargs)
