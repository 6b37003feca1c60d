"""Messages worker threads post back to their screen (the only way they touch the UI)."""

from __future__ import annotations

from collections.abc import Sequence

from textual.message import Message

from agentbox.audit import AuditRecord
from agentbox.egress.records import ConnectionRecord
from agentbox.model.evidence import Evidence
from agentbox.model.progress import Progress
from agentbox.model.shares import MechanismChoice
from agentbox.model.template import Template
from agentbox.services.agents import AgentTerminal
from agentbox.services.doctor import DoctorReport
from agentbox.services.network import NetworkStatus
from agentbox.services.outbox import OutboxEntry
from agentbox.services.outbox_limit import OutboxUsage
from agentbox.services.shares import ShareStatus
from agentbox.services.snapshots import Checkpoint
from agentbox.tui.approvals import ApprovalOutcome, HeldRequest
from agentbox.tui.operations import ErrorInfo, OperationResult
from agentbox.tui.views import DashboardData


class DashboardLoaded(Message):
    def __init__(self, data: DashboardData) -> None:
        super().__init__()
        self.data = data


class LoadFailed(Message):
    """Listing failed; `unavailable` when the hypervisor itself cannot be reached."""

    def __init__(self, error: ErrorInfo, *, unavailable: bool) -> None:
        super().__init__()
        self.error = error
        self.unavailable = unavailable


class ActionFailed(Message):
    """A quick action (no progress screen) failed: shown as an error dialog."""

    def __init__(self, error: ErrorInfo) -> None:
        super().__init__()
        self.error = error


class AgentTerminalReady(Message):
    def __init__(self, terminal: AgentTerminal) -> None:
        super().__init__()
        self.terminal = terminal


class SshCommandReady(Message):
    def __init__(self, *, name: str, argv: Sequence[str], purpose: str) -> None:
        super().__init__()
        self.name = name
        self.argv = tuple(argv)
        self.purpose = purpose  # "shell" or "copy"


class OperationProgressed(Message):
    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress


class OperationFinished(Message):
    def __init__(self, result: OperationResult) -> None:
        super().__init__()
        self.result = result


class DoctorDone(Message):
    def __init__(self, report: DoctorReport | None, error: ErrorInfo | None = None) -> None:
        super().__init__()
        self.report = report
        self.error = error


class CheckpointsLoaded(Message):
    def __init__(self, checkpoints: Sequence[Checkpoint] | None, error: ErrorInfo | None = None) -> None:
        super().__init__()
        self.checkpoints = tuple(checkpoints or ())
        self.error = error


class EvidenceLoaded(Message):
    def __init__(self, evidence: Sequence[Evidence] | None, error: ErrorInfo | None = None) -> None:
        super().__init__()
        self.evidence = tuple(evidence or ())
        self.error = error


class AuditArrived(Message):
    def __init__(self, records: Sequence[AuditRecord]) -> None:
        super().__init__()
        self.records = tuple(records)


class TemplatesLoaded(Message):
    def __init__(self, templates: Sequence[Template], error: ErrorInfo | None = None) -> None:
        super().__init__()
        self.templates = tuple(templates)
        self.error = error


class QuickActionDone(Message):
    """A quick action (no progress screen) worked: `summary` says what it did."""

    def __init__(self, summary: str) -> None:
        super().__init__()
        self.summary = summary


class NetworkLoaded(Message):
    def __init__(self, status: NetworkStatus | None, error: ErrorInfo | None = None) -> None:
        super().__init__()
        self.status = status
        self.error = error


class AllowlistChanged(Message):
    """An allow/deny went through (`summary`), or the service refused it (`error`)."""

    def __init__(self, *, summary: str = "", error: ErrorInfo | None = None) -> None:
        super().__init__()
        self.summary = summary
        self.error = error


class NetRecordsArrived(Message):
    def __init__(self, records: Sequence[ConnectionRecord], error: ErrorInfo | None = None) -> None:
        super().__init__()
        self.records = tuple(records)
        self.error = error


class SharesLoaded(Message):
    def __init__(self, shares: Sequence[ShareStatus] | None, error: ErrorInfo | None = None) -> None:
        super().__init__()
        self.shares = tuple(shares or ())
        self.error = error


class MechanismsLoaded(Message):
    def __init__(self, choices: Sequence[MechanismChoice], error: ErrorInfo | None = None) -> None:
        super().__init__()
        self.choices = tuple(choices)
        self.error = error


class OutboxLoaded(Message):
    def __init__(self, entries: Sequence[OutboxEntry] | None, error: ErrorInfo | None = None,
                 usage: OutboxUsage | None = None) -> None:
        super().__init__()
        self.entries = tuple(entries or ())
        self.error = error
        self.usage = usage


class ApprovalRequested(Message):
    def __init__(self, held: HeldRequest) -> None:
        super().__init__()
        self.held = held


class ApprovalAnswered(Message):
    def __init__(self, outcome: ApprovalOutcome) -> None:
        super().__init__()
        self.outcome = outcome
