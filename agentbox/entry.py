"""The `agentbox` command (DESIGN.md section 2: entry → cli | tui): the CLI, handed the way
to open the TUI, which it does for `agentbox tui` or `agentbox` alone in a terminal."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from agentbox.cli.main import main as cli_main


def open_tui() -> int:
    from agentbox.tui.app import run_tui  # noqa: PLC0415 - only now: other commands never load Textual

    return int(run_tui())


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(argv, open_tui=open_tui)


def run() -> None:
    sys.exit(main())
