"""`agentbox` command line: parse, dispatch to services, and the one error boundary."""

from __future__ import annotations

import argparse
import errno
import sys
import traceback
from collections.abc import Callable, Sequence

from agentbox import __version__
from agentbox.cli import commands
from agentbox.cli.agent_commands import add_agent_parser
from agentbox.cli.audit_commands import add_audit_parser
from agentbox.cli.key_commands import add_key_parser
from agentbox.cli.completion import add_completion_parser
from agentbox.cli.net_commands import add_net_parser
from agentbox.cli.panic_commands import add_panic_parsers
from agentbox.cli.budget_commands import add_budget_parsers
from agentbox.cli.receipt_commands import add_receipt_parsers
from agentbox.cli.recording_commands import add_recording_parsers
from agentbox.cli.share_commands import add_secret_options, add_share_parsers
from agentbox.cli.session_commands import add_session_parsers
from agentbox.cli.snapshot_commands import add_snapshot_parsers
from agentbox.errors import AgentboxError, Cancelled
from agentbox.services.share_paths import ALLOW_SYSTEM_OPTION

OS_ERROR_EXIT = 15  # the host refused a file operation (permissions, a full disk, ...)
UNEXPECTED_EXIT = 70  # a bug in agentbox, under --debug (sysexits' EX_SOFTWARE)
EXIT_CODES = f"""\
exit codes:
  0    success          1    failed (a check or a command said no)
  2    invalid input    3    bad settings or template file    4    not found
  5    already exists   6    busy (another agentbox operation holds the workspace)
  7    image error      8    libvirt unreachable              9    libvirt refused
  10   permission       11   guest did not come up            12   guest host key mismatch
  13   a tool failed    14   egress proxy error
  {OS_ERROR_EXIT}   the host refused a file operation (permissions, disk full, ...)
  {UNEXPECTED_EXIT}   a bug in agentbox, under --debug (without it Python prints the traceback, exit 1)
  130  cancelled or interrupted
agentbox exec and agentbox run exit with the command's own exit code."""
_OS_HINTS = {
    errno.EACCES: "check the owner and permissions of {where} (agentbox runs as you, not as root)",
    errno.EPERM: "check the owner and permissions of {where} (agentbox runs as you, not as root)",
    errno.ENOSPC: "free some space on the file system of {where}",
    errno.EDQUOT: "free some space: your disk quota is used up",
    errno.EROFS: "{where} is on a read-only file system",
    errno.ENOTDIR: "a part of {where} is a file where agentbox expects a folder: move it away",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse exits with 2 by itself; keep that but add the usual hint.
        self.print_usage(sys.stderr)
        sys.stderr.write(f"error: {message}\nhint: {self.prog} --help shows the options\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="agentbox", description="Disposable local VMs as safe workspaces for AI agents.",
                     epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"agentbox {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, also print the traceback and everything that led to it")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.add_parser("tui", help="open the full-screen interface (also: agentbox with no command)"
                   ).set_defaults(handler=None, tui=True)

    create = sub.add_parser("create", help="create a workspace from a template and wait until it is ready")
    create.add_argument("name")
    create.add_argument("--template", "-t", help="template name (default: the settings' default_template)")
    create.add_argument("--cpus", type=int, help="virtual CPUs")
    create.add_argument("--memory", type=int, metavar="MIB", help="memory in MiB")
    create.add_argument("--disk", type=int, metavar="GIB", help="disk size in GiB")
    create.add_argument("--egress-budget", metavar="SIZE", help="per session: bytes through the egress proxy (100M)")
    create.add_argument("--disk-write-budget", metavar="SIZE", help="per session: bytes written to its disks (2G)")
    create.add_argument("--cpu-budget", metavar="DURATION", help="per session: the guest's CPU time (600, 10m, 1h)")
    create.add_argument("--outbox-mib", type=int, metavar="MIB",
                        help="size limit of its /mnt/outbox (default: the settings' outbox_limit_mib, 1024)")
    create.add_argument("--network", choices=("off", "allowlist", "learn", "open"),
                        help="network mode (default: the template's)")
    create.add_argument("--share", action="append", default=[], metavar="DIR[:TAG]",
                        help="share DIR read-only at /mnt/shares/TAG (repeatable)")
    create.add_argument(ALLOW_SYSTEM_OPTION, action="store_true",
                        help="let --share name a system folder such as /etc or /var (never a credential folder)")
    add_secret_options(create)
    warm = create.add_mutually_exclusive_group()
    warm.add_argument("--warm", dest="warm", action="store_const", const=True, default=None,
                      help="clone the template's golden state (built on first use) instead of a cold boot "
                      "(default: the settings' warm_create)")
    warm.add_argument("--no-warm", dest="warm", action="store_const", const=False,
                      help="cold boot and provision, even where warm clones are on")
    standby = create.add_mutually_exclusive_group()
    standby.add_argument("--standby", dest="standby", action="store_const", const=True, default=None,
                         help="keep a paused clean copy ready, so resets are a swap to it (one more guest's RAM; "
                         "default: the template's policy)")
    standby.add_argument("--no-standby", dest="standby", action="store_const", const=False,
                         help="no standby copy, even where the template asks for one")
    create.add_argument("--json", action="store_true", help="print the workspace as JSON when done")
    create.set_defaults(handler=commands.create)

    lst = sub.add_parser("list", help="list workspaces")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=commands.list_workspaces)

    start = sub.add_parser("start", help="start a stopped workspace and wait for SSH")
    start.add_argument("name")
    start.set_defaults(handler=commands.start)

    stop = sub.add_parser("stop", help="shut a workspace down (forced after a timeout)")
    stop.add_argument("name")
    stop.add_argument("--force", action="store_true", help="power off at once")
    stop.set_defaults(handler=commands.stop)

    destroy = sub.add_parser("destroy", help="remove a workspace and everything it has")
    destroy.add_argument("name")
    destroy.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    destroy.add_argument("--purge", action="store_true",
                         help="also delete its audit log, receipts and recordings (kept by default)")
    destroy.set_defaults(handler=commands.destroy)

    add_snapshot_parsers(sub)
    add_session_parsers(sub, _Parser)
    add_net_parser(sub)
    add_key_parser(sub, _Parser)
    add_share_parsers(sub, _Parser)

    add_agent_parser(sub)

    ssh = sub.add_parser("ssh", help="open a shell (or run CMD) in a workspace with the system ssh")
    ssh.add_argument("name")
    ssh.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    ssh.set_defaults(handler=commands.ssh)

    exe = sub.add_parser("exec", help="run a command in a workspace; exits with its exit code")
    exe.add_argument("name")
    exe.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    exe.set_defaults(handler=commands.exec_command)

    cfg = sub.add_parser("ssh-config", help="write ~/.ssh/config.d/agentbox so `ssh agentbox-NAME` works")
    cfg.set_defaults(handler=commands.ssh_config)

    doctor = sub.add_parser("doctor", help="check that this machine can run workspaces")
    doctor.add_argument("--json", action="store_true")
    doctor.set_defaults(handler=commands.doctor)

    image = sub.add_parser("image", help="base images").add_subparsers(dest="image_command", metavar="ACTION",
                                                                       parser_class=_Parser, required=True)
    image_list = image.add_parser("list", help="list cached images")
    image_list.add_argument("--json", action="store_true")
    image_list.set_defaults(handler=commands.image_list)
    for action, text, handler in (("pull", "download (or build) a template's image", commands.image_pull),
                                  ("build", "build a template's image locally (needs root)", commands.image_build),
                                  ("rm", "remove a template's cached image", commands.image_rm)):
        p = image.add_parser(action, help=text)
        p.add_argument("template")
        p.set_defaults(handler=handler)

    template = sub.add_parser("template", help="templates").add_subparsers(
        dest="template_command", metavar="ACTION", parser_class=_Parser, required=True)
    template_list = template.add_parser("list", help="list templates")
    template_list.add_argument("--json", action="store_true")
    template_list.set_defaults(handler=commands.template_list)
    template_show = template.add_parser("show", help="show one template")
    template_show.add_argument("name")
    template_show.add_argument("--json", action="store_true")
    template_show.set_defaults(handler=commands.template_show)
    add_audit_parser(sub)
    add_receipt_parsers(sub)
    add_recording_parsers(sub)
    add_panic_parsers(sub)
    add_budget_parsers(sub)
    add_completion_parser(sub, parser)
    return parser


def main(argv: Sequence[str] | None = None, *, open_tui: Callable[[], int] | None = None) -> int:
    """Run one command. `open_tui` is how the entry point opens the full-screen interface
    (the CLI layer cannot import it); without it, `agentbox tui` says where to find it."""
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if getattr(args, "handler", None) is None:
        if not getattr(args, "tui", False) and not (sys.stdin.isatty() and sys.stdout.isatty()):
            parser.print_help()  # a script or a pipe: no full-screen app
            return 0
        args.handler = lambda _: _tui(open_tui)
    try:
        return int(args.handler(args))
    except Cancelled as exc:
        sys.stderr.write(f"\ncancelled: {exc.message}\n")
        return _debug(exc, args, exc.exit_code)
    except KeyboardInterrupt as exc:
        sys.stderr.write("\ninterrupted\n")
        return _debug(exc, args, 130)
    except AgentboxError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        if exc.hint:
            sys.stderr.write(f"hint: {exc.hint}\n")
        return _debug(exc, args, exc.exit_code)
    except OSError as exc:  # a file operation no service expected to fail
        message, hint = describe_os_error(exc)
        sys.stderr.write(f"error: {message}\nhint: {hint}\n")
        return _debug(exc, args, OS_ERROR_EXIT)
    except Exception as exc:
        if not args.debug:
            raise  # a bug: Python's own traceback is what a report needs
        sys.stderr.write(f"error: unexpected {type(exc).__name__}: {exc}\n")
        return _debug(exc, args, UNEXPECTED_EXIT)


def describe_os_error(exc: OSError) -> tuple[str, str]:
    """One line naming the path and the system's reason, and what to do about it."""
    reason = exc.strerror or str(exc)
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    message = f"{' -> '.join(paths)}: {reason}" if paths else reason
    where = paths[0] if paths else "agentbox's data dir"
    hint = _OS_HINTS.get(exc.errno or 0, "agentbox --debug ... shows where it happened").format(where=where)
    return message, hint


def _debug(exc: BaseException, args: argparse.Namespace, code: int) -> int:
    """With --debug: the traceback of `exc` and every exception behind it, even those a
    service replaced by a clearer error (`raise ... from None`)."""
    if getattr(args, "debug", False):
        link: BaseException | None = exc
        seen: set[int] = set()
        while link is not None and id(link) not in seen:
            seen.add(id(link))
            link.__suppress_context__ = False
            link = link.__cause__ or link.__context__
        sys.stderr.write("".join(traceback.format_exception(exc)))
    return code


def _tui(open_tui: Callable[[], int] | None) -> int:
    if open_tui is None:
        raise AgentboxError("the full-screen interface is opened by the agentbox command itself",
                            hint="run: agentbox tui")
    return open_tui()
