"""session start/end/status, and run: a disposable session around one command."""

from __future__ import annotations

import argparse
import contextlib
import errno
import sys
from dataclasses import asdict
from typing import Any

from agentbox import bootstrap
from agentbox.cli.output import print_json
from agentbox.cli.progress import ProgressPrinter
from agentbox.cli.receipt_commands import SESSION_END_FILES, format_receipt
from agentbox.cli.snapshot_commands import describe_outcome
from agentbox.cli.signals import cancel_on_signals
from agentbox.errors import Cancelled, InvalidInput
from agentbox.model.progress import CancelToken, Progress, ProgressCallback
from agentbox.services.sessions import SessionEnd


def add_session_parsers(sub: argparse._SubParsersAction, parser_class: type) -> None:  # type: ignore[type-arg]
    session = sub.add_parser("session", help="sessions: start one, end it (with a reset)").add_subparsers(
        dest="session_command", metavar="ACTION", parser_class=parser_class, required=True)
    start = session.add_parser("start", help="start a session (starts the workspace if needed)")
    start.add_argument("name")
    start.add_argument("--max-minutes", type=float, metavar="N", help="end (and reset) by itself after N minutes")
    start.add_argument("--json", action="store_true")
    start.set_defaults(handler=session_start)
    end = session.add_parser("end", help="end the session: reset unless the policy keeps the state")
    end.add_argument("name")
    end.add_argument("--json", action="store_true")
    end.set_defaults(handler=session_end)
    status = session.add_parser("status", help="show the workspace's session, if any")
    status.add_argument("name")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=session_status)

    run = sub.add_parser("run", help="run one command in a disposable session; exits with its code")
    run.add_argument("--template", "-t", help="template for a new workspace")
    run.add_argument("--name", help="use (or create and keep) this workspace instead of a throw-away one")
    run.add_argument("--max-minutes", type=float, metavar="N", help="stop the command after N minutes (exit 124)")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    run.set_defaults(handler=run_command)


def end_text(end: SessionEnd) -> str:
    minutes = end.duration_s / 60
    what = describe_outcome(end.reset) if end.reset else "state kept (no reset)"
    return f"session of {end.session.name} ended after {minutes:.1f} min ({end.reason}); {what}"


def _receipt_text(end: SessionEnd) -> str:
    if end.receipt is None:
        return f"no receipt was stored for this session: {end.receipt_error}"
    return (format_receipt(end.receipt, max_files=SESSION_END_FILES)
            + f"\n\nthis receipt again: agentbox receipt {end.session.name} {end.receipt.id}")


def session_start(args: argparse.Namespace) -> int:
    session = bootstrap.build_services().sessions.start(name=args.name, max_minutes=args.max_minutes,
                                                        on_progress=ProgressPrinter(), cancel=CancelToken())
    if args.json:
        print_json(asdict(session))
    else:
        limit = f"; it ends by itself at {session.deadline}" if session.deadline else ""
        print(f"session started in {args.name}{limit}. End it with: agentbox session end {args.name}")
    return 0


def session_end(args: argparse.Namespace) -> int:
    end = bootstrap.build_services().sessions.end(name=args.name, reason="ended by the user",
                                                  on_progress=ProgressPrinter(), cancel=CancelToken())
    assert end is not None  # without session_id, end() raises instead of returning None
    if args.json:
        print_json(asdict(end))
    else:
        print(_receipt_text(end) + "\n\n" + end_text(end))
    return 0


def session_status(args: argparse.Namespace) -> int:
    services = bootstrap.build_services()
    services.workspaces.get(name=args.name)  # NotFound for unknown names
    session = services.sessions.current(name=args.name)
    if args.json:
        print_json(asdict(session) if session else None)
    elif session is None:
        print(f"{args.name} is not in a session")
    else:
        print(f"{args.name}: session {session.id} since {session.started}"
              + (f", ends at {session.deadline}" if session.deadline else ""))
    return 0


def run_command(args: argparse.Namespace) -> int:
    command = list(args.cmd)
    command = command[1:] if command[:1] == ["--"] else command
    if not command:
        raise InvalidInput("no command given", hint="agentbox run [--name NAME] -- COMMAND [ARGS...]")

    def sink(stream: Any) -> Any:
        def write(chunk: bytes) -> None:
            stream.write(chunk)
            stream.flush()
        return write

    cancel = CancelToken()
    with cancel_on_signals(cancel) as received:
        try:
            outcome = bootstrap.build_services().sessions.run(
                argv=command, name=args.name, template=args.template, max_minutes=args.max_minutes,
                stdout=sink(sys.stdout.buffer), stderr=sink(sys.stderr.buffer),
                on_progress=_unless_gone(ProgressPrinter()), cancel=cancel)
        except (Cancelled, OSError) as exc:
            # The service cleaned up before this reached here (had that failed, its error would
            # have come instead); EPIPE and EIO are the closed terminal the command's output went to.
            if received.signum is None or (isinstance(exc, OSError) and exc.errno not in _TERMINAL_GONE):
                raise
            done = "its throw-away workspace was destroyed" if args.name is None else \
                f"the session of {args.name} was ended"
            _quietly(f"\n{received.name}: the run was stopped; {done}\n")
            return received.exit_code
    if outcome.timed_out:
        sys.stderr.write(f"time limit of {args.max_minutes:g} min reached: the command was stopped\n")
    _quietly(_receipt_text(outcome.end) + "\n\n" + end_text(outcome.end)
             + ("; the throw-away workspace was destroyed" if outcome.temporary else "") + "\n")
    if received.signum is not None:  # it came after the command, during the cleanup, which went on to the end
        _quietly(f"{received.name} during the cleanup: it finished all the same\n")
        return received.exit_code
    return outcome.exit_code


_TERMINAL_GONE = (errno.EPIPE, errno.EIO)


def _unless_gone(on_progress: ProgressCallback) -> ProgressCallback:
    """Progress that never stops the cleanup: after SIGHUP the terminal may be gone (EIO)."""
    def report(progress: Progress) -> None:
        with contextlib.suppress(OSError):
            on_progress(progress)
    return report


def _quietly(text: str) -> None:
    with contextlib.suppress(OSError):
        sys.stderr.write(text)
        sys.stderr.flush()
