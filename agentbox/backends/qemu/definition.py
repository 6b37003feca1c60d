"""A domain's definition as the QEMU backend keeps it: the DomainSpec it was defined with
and the accelerator chosen then, as JSON in the domain's own directory (`domain.json`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from agentbox.backends.base import DirectKernelBoot, DiskSpec, DomainMetadata, DomainSpec
from agentbox.config.atomic_file import write_atomically
from agentbox.errors import BackendError
from agentbox.model.workspace import Accel

FORMAT = 1


@dataclass(frozen=True)
class QemuDomain:
    spec: DomainSpec
    accel: Accel  # resolved (kvm, tcg or hvf-like platform accelerators), never auto

    def to_json(self) -> str:
        spec = self.spec
        boot = spec.kernel_boot
        doc = {
            "format": FORMAT,
            "accel": self.accel.value,
            "name": spec.name,
            "metadata": {"workspace": spec.metadata.workspace, "owner": spec.metadata.owner,
                         "template": spec.metadata.template, "created": spec.metadata.created},
            "vcpus": spec.vcpus,
            "memory_mib": spec.memory_mib,
            "disks": [{"path": str(d.path), "format": d.format, "readonly": d.readonly, "serial": d.serial}
                      for d in spec.disks],
            "ssh_port": spec.ssh_port,
            "console_log": str(spec.console_log),
            "kernel_boot": None if boot is None else {"kernel": str(boot.kernel), "initrd": str(boot.initrd),
                                                      "cmdline": boot.cmdline},
        }
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: Path) -> QemuDomain:
        try:
            doc = json.loads(text)
            if doc.get("format") != FORMAT:
                raise ValueError(f"unknown format {doc.get('format')!r}")
            boot = doc["kernel_boot"]
            spec = DomainSpec(
                name=str(doc["name"]),
                metadata=DomainMetadata(**{k: str(doc["metadata"][k]) for k in
                                           ("workspace", "owner", "template", "created")}),
                vcpus=int(doc["vcpus"]),
                memory_mib=int(doc["memory_mib"]),
                disks=tuple(DiskSpec(path=Path(d["path"]), format=str(d["format"]), readonly=bool(d["readonly"]),
                                     serial=str(d["serial"])) for d in doc["disks"]),
                ssh_port=int(doc["ssh_port"]),
                console_log=Path(doc["console_log"]),
                kernel_boot=None if boot is None else DirectKernelBoot(
                    kernel=Path(boot["kernel"]), initrd=Path(boot["initrd"]), cmdline=str(boot["cmdline"])),
            )
            return cls(spec=spec, accel=Accel(doc["accel"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackendError(f"unreadable QEMU domain definition {source}: {exc}",
                               hint="destroy the workspace, or remove that directory if nothing uses it") from None


def save(path: Path, domain: QemuDomain) -> None:
    write_atomically(path=path, data=domain.to_json().encode())


def load(path: Path) -> QemuDomain:
    return QemuDomain.from_json(path.read_text(encoding="utf-8"), source=path)
