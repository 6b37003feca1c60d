"""Recording what a session showed: shells and commands over the system ssh (`exec` is
recorded by WorkspaceService.exec itself), and reading recordings back. The receipt of a
session lists the recordings made during it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agentbox.host.terminal_recorder import record_program, window_size
from agentbox.model.recording import RecordingKind, RecordingSummary
from agentbox.services.context import ServiceContext
from agentbox.services.session_recording import recording
from agentbox.services.workspaces import WorkspaceService
from agentbox.stores.recordings import RecordingStore, StoredCast


@dataclass(frozen=True)
class RecordedRun:
    exit_code: int
    recording: str  # its id


class RecordingService:
    def __init__(self, *, ctx: ServiceContext) -> None:
        self._ctx = ctx

    @property
    def enabled(self) -> bool:
        return self._ctx.settings.record_sessions

    def run_terminal(self, *, name: str, command: Sequence[str], kind: RecordingKind,
                     stdin_fd: int = 0, stdout_fd: int = 1, stderr_fd: int = 2) -> RecordedRun:
        """Run `command` in the guest (a login shell when empty) through the system ssh on this
        terminal, recorded; its exit code is the session's."""
        argv = WorkspaceService(ctx=self._ctx).ssh_command(name=name, command=command)
        return self.run_recorded(name=name, argv=argv, shown=list(command) or ["(shell)"], kind=kind,
                                 stdin_fd=stdin_fd, stdout_fd=stdout_fd, stderr_fd=stderr_fd)

    def run_recorded(self, *, name: str, argv: Sequence[str], shown: Sequence[str], kind: RecordingKind,
                     stdin_fd: int = 0, stdout_fd: int = 1, stderr_fd: int = 2) -> RecordedRun:
        """Run the system ssh's `argv` into workspace `name` (an agent's terminal, say) on this
        terminal, recorded; `shown` is what the recording says ran."""
        with recording(ctx=self._ctx, name=name, kind=kind, argv=shown, size=window_size(stdout_fd)) as active:
            active.exit_code = record_program(argv=argv, sink=active.write, stdin_fd=stdin_fd,
                                              stdout_fd=stdout_fd, stderr_fd=stderr_fd)
        return RecordedRun(exit_code=active.exit_code, recording=active.id)

    def list(self, *, name: str) -> tuple[RecordingSummary, ...]:
        return RecordingStore(paths=self._ctx.paths).list(name=name)

    def get(self, *, name: str, recording_id: str) -> StoredCast:
        return RecordingStore(paths=self._ctx.paths).get(name=name, recording_id=recording_id)

