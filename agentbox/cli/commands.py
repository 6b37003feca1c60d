"""One handler per command: call a service, print the outcome, return the exit code."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agentbox import bootstrap
from agentbox.cli.output import confirmed, print_json, print_table
from agentbox.cli.progress import ProgressPrinter
from agentbox.errors import InvalidInput
from agentbox.model.progress import CancelToken
from agentbox.model.recording import RecordingKind
from agentbox.model.template import BuildRecipe
from agentbox.model.budget import CREATE_OPTIONS, parse_budget
from agentbox.model.workspace import Workspace
from agentbox.services.create import CreateRequest
from agentbox.services.doctor import CheckStatus


def _services() -> bootstrap.Services:
    return bootstrap.build_services()


def budget_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """`create --egress-budget 100M --disk-write-budget 2G --cpu-budget 1h` (bad sizes: exit 2)."""
    overrides: dict[str, int | None] = {}
    for budget, option in CREATE_OPTIONS:
        text = getattr(args, option.removeprefix("--").replace("-", "_"))
        overrides[budget] = None if text is None else parse_budget(budget=budget, text=text, what=option)
    return overrides


def create(args: argparse.Namespace) -> int:
    services = _services()
    record = services.create.create(
        request=CreateRequest(name=args.name, template=args.template, vcpus=args.cpus,
                              memory_mib=args.memory, disk_gib=args.disk, network=args.network,
                              shares=tuple(args.share), allow_system_folder=args.allow_system_folder,
                              outbox_mib=args.outbox_mib, share_secrets=args.secrets, warm=args.warm,
                              standby=args.standby, **budget_overrides(args)),
        on_progress=ProgressPrinter(), cancel=CancelToken())
    workspace = services.workspaces.get(name=record.name)
    if args.json:
        print_json(asdict(workspace))
    else:
        print(f"{workspace.name} is {workspace.state}: `agentbox ssh {workspace.name}` to enter, "
              f"`agentbox exec {workspace.name} -- CMD` to run a command")
    return 0


def list_workspaces(args: argparse.Namespace) -> int:
    workspaces = _services().workspaces.list()
    if args.json:
        print_json([asdict(w) for w in workspaces])
        return 0
    if not workspaces:
        print("no workspaces yet: agentbox create NAME")
        return 0
    print_table(("NAME", "STATE", "TEMPLATE", "BACKEND", "HOST", "CREATED", "SSH"),
                [(w.name, _state_text(w), w.template, w.backend.value,
                  w.host or "local", w.created, f"127.0.0.1:{w.ssh_port}" if w.ssh_port else "-")
                 for w in workspaces])
    return 0


def _state_text(workspace: Workspace) -> str:
    if workspace.problem:
        return f"{workspace.state.value} ({workspace.problem})"
    if workspace.paused_by:
        return f"{workspace.state.value} by its {workspace.paused_by} budget " \
               f"(agentbox budget {workspace.name} --resume)"
    return workspace.state.value


def start(args: argparse.Namespace) -> int:
    workspace = _services().workspaces.start(name=args.name, on_progress=ProgressPrinter(), cancel=CancelToken())
    print(f"{workspace.name} is {workspace.state}")
    return 0


def stop(args: argparse.Namespace) -> int:
    workspace = _services().workspaces.stop(name=args.name, force=args.force, on_progress=ProgressPrinter(),
                                            cancel=CancelToken())
    print(f"{workspace.name} is {workspace.state}")
    return 0


def destroy(args: argparse.Namespace) -> int:
    services = _services()
    services.workspaces.get(name=args.name)  # NotFound before asking anything
    if not args.yes and not confirmed(
            question=f"Destroy workspace {args.name!r} and everything in it? Type its name to confirm: ",
            expected=(args.name,), what=f"destroying {args.name!r}", hint=f"agentbox destroy {args.name} --yes"):
        print("not destroyed")
        return 1
    services.workspaces.destroy(name=args.name, on_progress=ProgressPrinter(), purge=args.purge)
    print(f"{args.name} destroyed" + ("" if args.purge else f" (audit log kept: agentbox audit {args.name})"))
    return 0


def _command_after_dashes(args: argparse.Namespace) -> list[str]:
    cmd = list(args.cmd)
    return cmd[1:] if cmd[:1] == ["--"] else cmd


def ssh(args: argparse.Namespace) -> int:
    services, command = _services(), _command_after_dashes(args)
    if services.recordings.enabled:
        kind = RecordingKind.COMMAND if command else RecordingKind.SHELL
        return services.recordings.run_terminal(name=args.name, command=command, kind=kind).exit_code
    argv = services.workspaces.ssh_command(name=args.name, command=command)
    # The system ssh owns the terminal; its exit code is the command's, so no check=True.
    return subprocess.run(argv, check=False).returncode


def exec_command(args: argparse.Namespace) -> int:
    command = _command_after_dashes(args)
    if not command:
        raise InvalidInput("no command given", hint=f"agentbox exec {args.name} -- COMMAND [ARGS...]")
    out, err = sys.stdout.buffer, sys.stderr.buffer

    def write(stream: Any) -> Any:
        def sink(chunk: bytes) -> None:
            stream.write(chunk)
            stream.flush()
        return sink

    result = _services().workspaces.exec(name=args.name, argv=command, stdout=write(out), stderr=write(err))
    return result.exit_code


def ssh_config(args: argparse.Namespace) -> int:
    managed = _services().workspaces.write_ssh_config(ssh_dir=Path.home() / ".ssh")
    print(f"wrote {managed.path} ({len(managed.workspaces)} workspace(s): "
          f"{', '.join('agentbox-' + n for n in managed.workspaces) or 'none yet'})")
    if not managed.included:
        print(f"to use it, add this line at the TOP of {managed.path.parent.parent / 'config'}:\n"
              f"  {managed.include_line}")
    return 0


def doctor(args: argparse.Namespace) -> int:
    report = _services().doctor.run()
    if args.json:
        print_json({"ok": report.ok, "checks": [asdict(c) for c in report.checks]})
    else:
        marks = {CheckStatus.OK: "ok  ", CheckStatus.WARN: "warn", CheckStatus.FAIL: "FAIL"}
        for check in report.checks:
            print(f"[{marks[check.status]}] {check.name}: {check.detail}")
            if check.hint and check.status is not CheckStatus.OK:
                print(f"       fix: {check.hint}")
    return 0 if report.ok else 1


def image_list(args: argparse.Namespace) -> int:
    services = _services()
    images = services.images.list_images()
    goldens = services.images.golden_states()
    if args.json:
        print_json([asdict(i) for i in images])
        return 0
    if not images:
        print("no images cached yet: agentbox image pull TEMPLATE")
        return 0
    # A layer is a base image plus what was installed at build: BASE, PACKAGES (Debian) and
    # INSTALLS (pinned npm and pip packages) say which.
    print_table(("IMAGE", "BASE", "PACKAGES", "INSTALLS", "SIZE", "TEMPLATE", "CREATED", "SOURCE"),
                [(i.image_id, i.base or "-", _packages_cell(i.packages), ",".join((*i.npm, *i.pip)) or "-",
                  f"{i.size_bytes / 2**20:.0f} MiB", i.template, i.created, i.source) for i in images])
    if goldens:
        # Golden states: a provisioned guest saved with its RAM, which warm creates restore.
        print()
        print_table(("GOLDEN STATE", "IMAGE", "SHAPE", "SIZE", "TEMPLATE", "CREATED"),
                    [(g.golden_id, g.image_id, f"{g.resources.vcpus} vCPU {g.resources.memory_mib} MiB "
                      f"{g.resources.disk_gib} GiB", f"{g.size_bytes / 2**20:.0f} MiB", g.template, g.created)
                     for g in goldens])
    return 0


def _packages_cell(packages: tuple[str, ...], *, shown: int = 4) -> str:
    if not packages:
        return "-"
    more = f" +{len(packages) - shown}" if len(packages) > shown else ""
    return ",".join(packages[:shown]) + more


def image_pull(args: argparse.Namespace) -> int:
    image = _services().images.pull(template=args.template, on_progress=ProgressPrinter(), cancel=CancelToken())
    print(f"{image.image_id} ready ({image.disk})")
    return 0


def image_build(args: argparse.Namespace) -> int:
    image = _services().images.build(template=args.template, on_progress=ProgressPrinter(), cancel=CancelToken())
    print(f"{image.image_id} ready ({image.disk})")
    return 0


def image_rm(args: argparse.Namespace) -> int:
    removed = _services().images.remove(template=args.template)
    for golden_id in removed.golden_ids:
        print(f"removed golden state {golden_id}")
    print(f"removed {removed.image.image_id}")
    return 0


def template_list(args: argparse.Namespace) -> int:
    templates = _services().images.templates()
    if args.json:
        print_json([asdict(t) for t in templates])
        return 0
    print_table(("TEMPLATE", "IMAGE", "CPUS", "MEMORY", "DISK", "DESCRIPTION"),
                [(t.name, "build" if isinstance(t.image, BuildRecipe) else "download", str(t.resources.vcpus),
                  f"{t.resources.memory_mib} MiB", f"{t.resources.disk_gib} GiB", t.description) for t in templates])
    return 0


def template_show(args: argparse.Namespace) -> int:
    template = _services().images.template(name=args.name)
    data = asdict(template)
    if args.json:
        print_json(data)
    else:
        print(json.dumps(data, indent=2, default=str))
    return 0
