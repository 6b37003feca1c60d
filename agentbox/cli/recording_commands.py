"""`agentbox recordings NAME` and `agentbox replay NAME ID`: what past sessions showed.

Read from the data dir alone, like receipts, so they work after the workspace is gone. A
replay writes the recorded bytes to this terminal as they were shown (escape sequences
included: that is what a replay is), so it refuses a recording whose SHA-256 no longer
matches the audit log's unless asked with --force.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import asdict

from agentbox import bootstrap
from agentbox.cli.output import print_json, print_table
from agentbox.errors import AgentboxError, InvalidInput
from agentbox.model.recording import RecordingIntegrity

MAX_PAUSE_S = 2.0  # a long idle stretch in a recording is replayed as this long (asciinema's -i)
_TRUSTED = (RecordingIntegrity.MATCHES, RecordingIntegrity.INCOMPLETE)
_INTEGRITY = {
    RecordingIntegrity.MATCHES: "matches",
    RecordingIntegrity.DIFFERS: "CHANGED",
    RecordingIntegrity.INCOMPLETE: "incomplete",
    RecordingIntegrity.UNRECORDED: "unrecorded",
    RecordingIntegrity.MISSING: "file missing",
}


def add_recording_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    listing = sub.add_parser("recordings", help="list the recorded sessions (ssh, exec, agent) of a workspace")
    listing.add_argument("name")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=list_recordings)
    replay = sub.add_parser("replay", help="play a recorded session back in this terminal")
    replay.add_argument("name")
    replay.add_argument("id", help="the recording id (or a unique start of it), from `agentbox recordings NAME`")
    replay.add_argument("--speed", type=float, default=1.0, help="play faster (2) or slower (0.5)")
    replay.add_argument("--no-wait", action="store_true", help="print it all at once, without the pauses")
    replay.add_argument("--force", action="store_true",
                        help="play it even if it changed since it was saved (its SHA-256 differs)")
    replay.set_defaults(handler=replay_recording)


def list_recordings(args: argparse.Namespace) -> int:
    summaries = bootstrap.build_history().recordings.list(name=args.name)
    if args.json:
        print_json([asdict(s) for s in summaries])
        return 0
    if not summaries:
        print(f"no recordings for {args.name}: `agentbox ssh`, `exec` and agent terminals are recorded "
              "(setting record_sessions)")
        return 0
    print_table(["ID", "STARTED", "KIND", "SECONDS", "BYTES", "INTEGRITY", "COMMAND"], [
        [s.id, s.started or "?", s.kind.value if s.kind else "?", f"{s.duration_s:.1f}", str(s.bytes),
         _INTEGRITY[s.integrity], _printable(shlex.join(s.argv))] for s in summaries])
    return 0


def replay_recording(args: argparse.Namespace) -> int:
    if not 0.01 <= args.speed <= 100:
        raise InvalidInput(f"--speed {args.speed} is out of range", hint="give a factor from 0.01 to 100, e.g. 2")
    stored = bootstrap.build_history().recordings.get(name=args.name, recording_id=args.id)
    integrity = stored.summary.integrity
    if integrity not in _TRUSTED and not args.force:
        raise AgentboxError(f"recording {stored.summary.id} of {args.name!r} is {_INTEGRITY[integrity].lower()}: "
                            "the audit log does not vouch for what it holds",
                            hint=f"agentbox audit verify {args.name}; add --force to play it anyway")
    out = sys.stdout.buffer
    played = 0.0
    for event in stored.cast.events:
        if not args.no_wait:
            pause = min(event.at - played, MAX_PAUSE_S) / args.speed
            if pause > 0:
                time.sleep(pause)
        played = event.at
        out.write(event.text.encode())
        out.flush()
    if integrity is RecordingIntegrity.INCOMPLETE:
        sys.stderr.write(f"\nnote: recording {stored.summary.id} was never closed (agentbox ended during it); "
                         "it holds what was written until then\n")
    return 0


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
