"""What agentbox checks about each share after it is attached, kept per workspace in
`share-checks.json` (written only by the share service):

- the read-only proof: from inside the guest, as root, the share's mount is remounted
  read-write and a file written; the write must fail (the host's boundary refuses it, not
  the guest's own `ro`). Its time and result show in `share list` and the TUI.
- secrets found by the re-scan at a later attach that were not there when it was added.

The proof runs in the same SSH round trip as the mounts; its result comes back on stderr as
`agentbox-ro-proof TAG refused|WRITABLE DETAIL` lines, so the reset's clock reading on stdout
stays as it is.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass

from pathlib import Path

from agentbox.config.atomic_file import write_atomically
from agentbox.errors import InvalidInput, SecretsFound
from agentbox.model.secret_rules import SecretScan
from agentbox.model.shares import ReadOnlyProof, SecretChoice
from agentbox.stores.records import WorkspaceFiles

_MARK = "agentbox-ro-proof"
PROBE_FILE = ".agentbox-ro-proof"


@dataclass(frozen=True)
class ShareCheck:
    proof: ReadOnlyProof | None = None
    new_secrets: tuple[str, ...] = ()  # "path (rule)", found at a re-attach, not known at add


def proof_script(*, tag: str, guest_dir: str) -> str:
    """Shell (run as root in the guest) that tries a write to the attached share at `guest_dir`
    and reports it on stderr; it never fails itself."""
    d, p = shlex.quote(guest_dir), shlex.quote(f"{guest_dir}/{PROBE_FILE}")
    return (f"(mount -o remount,rw {d} 2>/dev/null; m=$?; "
            f"if e=$( (: > {p}) 2>&1 ); then rm -f {p}; r=WRITABLE; else r=refused; fi; "
            f"mount -o remount,ro {d} 2>/dev/null; "
            f"printf '%s %s %s remount-rw=%s: %s\\n' {_MARK} {shlex.quote(tag)} \"$r\" \"$m\" \"$e\" >&2; true)")


def parse_proofs(*, output: bytes, when: str) -> dict[str, ReadOnlyProof]:
    proofs: dict[str, ReadOnlyProof] = {}
    for line in output.decode(errors="replace").splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[0] == _MARK:
            _, tag, result, detail = parts
            remount, _, error = detail.partition(": ")
            words = ("the guest's mount went read-write, the write still failed" if remount == "remount-rw=0"
                     else "the device refused to go read-write, the write failed")
            proofs[tag] = ReadOnlyProof(time=when, refused=result == "refused",
                                        detail=f"{words}: {error.split(': ')[-1] or 'no error'}"
                                        if result == "refused" else "THE WRITE WENT THROUGH")
    return proofs


class ShareChecks:
    def __init__(self, *, files: WorkspaceFiles) -> None:
        self._path = files.share_checks

    def load(self) -> dict[str, ShareCheck]:
        try:
            raw = json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # none yet (or damaged: the next attach writes it anew)
        return {tag: ShareCheck(proof=ReadOnlyProof(**item["proof"]) if item.get("proof") else None,
                                new_secrets=tuple(item.get("new_secrets", ())))
                for tag, item in raw.items() if isinstance(item, dict)}

    def update(self, *, tag: str, proof: ReadOnlyProof | None = None,
               new_secrets: tuple[str, ...] | None = None) -> None:
        checks = self.load()
        old = checks.get(tag, ShareCheck())
        checks[tag] = ShareCheck(proof=proof or old.proof,
                                 new_secrets=old.new_secrets if new_secrets is None else new_secrets)
        self._save(checks)

    def drop(self, *, tag: str) -> None:
        checks = self.load()
        if checks.pop(tag, None) is not None:
            self._save(checks)

    def _save(self, checks: dict[str, ShareCheck]) -> None:
        data = {tag: {"proof": asdict(c.proof) if c.proof else None, "new_secrets": list(c.new_secrets)}
                for tag, c in checks.items()}
        write_atomically(path=self._path, data=(json.dumps(data, indent=2) + "\n").encode())


EXCLUDE_OPTION, ALLOW_OPTION = "--exclude-secrets", "--allow-secrets"


def secret_choice(value: str | SecretChoice | None) -> SecretChoice | None:
    if value is None or isinstance(value, SecretChoice):
        return value
    try:
        return SecretChoice(value)
    except ValueError:
        raise InvalidInput(f"unknown choice for secrets {value!r}", hint="exclude or allow") from None


def gate_secrets(*, source: Path, scan: SecretScan, choice: SecretChoice | None) -> None:
    """Fail closed: a folder with likely secrets (or too large to scan whole) is shared only
    once the user chose what to do about them."""
    if choice is SecretChoice.ALLOW or (scan.complete and not scan.findings):
        return
    if not scan.complete:
        raise SecretsFound(f"{source} is too large to scan for secrets (stopped after {scan.files} files)",
                           hint=f"share a smaller folder, or {ALLOW_OPTION} to share it unscanned")
    if choice is SecretChoice.EXCLUDE:
        return
    raise SecretsFound(
        f"{source} holds {len(scan.findings)} likely secret(s): {scan.summary()}",
        hint=f"{EXCLUDE_OPTION} shares the folder without those files (as a copy made now), "
             f"{ALLOW_OPTION} shares them anyway",
        findings=tuple(f.render() for f in scan.findings))
