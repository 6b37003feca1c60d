"""agent: a terminal with the workspace's agent running in the project folder."""

from __future__ import annotations

import argparse
import subprocess
import sys

from agentbox import bootstrap
from agentbox.cli.progress import ProgressPrinter
from agentbox.cli.session_commands import end_text
from agentbox.cli.signals import cancel_on_signals
from agentbox.model.progress import CancelToken
from agentbox.model.recording import RecordingKind


def add_agent_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    agent = sub.add_parser("agent", help="open a terminal with the workspace's agent running in the project folder")
    agent.add_argument("name")
    agent.add_argument("--agent", metavar="AGENT", help="which agent, for a template with several (default: its first)")
    agent.set_defaults(handler=agent_terminal)


def agent_terminal(args: argparse.Namespace) -> int:
    services = bootstrap.build_services()
    terminal = services.agents.open(name=args.name, agent=args.agent, on_progress=ProgressPrinter(),
                                    cancel=CancelToken())
    leaving = "the session then ends" if terminal.own_session else "the session stays open (it was open before)"
    sys.stderr.write(f"{terminal.agent.name} in {args.name}, in {terminal.folder}; quit it to leave ({leaving})\n")
    sys.stderr.flush()
    cancel = CancelToken()
    # A closed terminal (SIGHUP) or a kill must not skip the end of the session below.
    with cancel_on_signals(cancel) as received:
        # The system ssh owns the terminal; its exit code is the agent's, so no check=True.
        if services.recordings.enabled:
            code = services.recordings.run_recorded(name=args.name, argv=terminal.argv, shown=[terminal.agent.command],
                                                    kind=RecordingKind.AGENT).exit_code
        else:
            code = subprocess.run(list(terminal.argv), check=False).returncode
        end = services.agents.close(terminal=terminal, exit_code=code, on_progress=ProgressPrinter(),
                                    cancel=CancelToken())
    if end is not None:
        sys.stderr.write(end_text(end) + "\n")
    return received.exit_code if received.signum is not None else code
