"""Which host folders may be shared into a guest, and the tag a share gets by default."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from agentbox.errors import InvalidInput
from agentbox.model.names import validate_label

OUTBOX_TAG = "agentbox-outbox"
ALLOW_SYSTEM_OPTION = "--allow-system-folder"
# Where keys and tokens live, under the home folder: never shared, whatever the caller says.
CREDENTIAL_DIRS = (".ssh", ".gnupg", ".aws", ".azure", ".config", ".kube", ".docker", ".password-store",
                   ".local/share/keyrings", ".netrc")
# The host's own system: refused unless the caller insists (a shared /etc is /etc/shadow to a root agentbox).
SYSTEM_DIRS = ("/etc", "/proc", "/dev", "/sys", "/var", "/root", "/boot", "/run", "/usr", "/bin", "/sbin",
               "/lib", "/lib32", "/lib64", "/libx32")
_TAG = re.compile(r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def validate_share_source(*, source: str, home: Path, own_dirs: Iterable[Path],
                          allow_system_folder: bool = False) -> Path:
    """The resolved folder, or InvalidInput saying why it may not be shared. Credential
    folders are never shared; system folders only with `allow_system_folder`."""
    raw = Path(source).expanduser()
    try:
        path = raw.resolve(strict=True)  # symlinks resolved: the check is on what is really shared
    except FileNotFoundError:
        raise InvalidInput(f"{source}: no such folder", hint="give an existing folder to share") from None
    except (OSError, RuntimeError) as exc:
        raise InvalidInput(f"{source}: cannot be resolved ({exc})") from None
    if not path.is_dir():
        raise InvalidInput(f"{source}: not a folder", hint="share the folder that contains it")
    home = home.resolve()
    if path == Path("/"):
        raise InvalidInput("refusing to share / (the whole host)", hint="share only the folder the agent needs")
    if path == home:
        raise InvalidInput(f"refusing to share your whole home folder {home}",
                           hint="share only the project folder the agent needs")
    if _within(home, path):
        raise InvalidInput(f"refusing to share {path}: it contains your home folder {home}",
                           hint="share only the folder the agent needs")
    for secret in CREDENTIAL_DIRS:
        for where in dict.fromkeys((home / secret, (home / secret).resolve())):  # the folder and what it links to
            if _within(path, where) or _within(where, path):
                raise InvalidInput(
                    f"refusing to share {path}: it is or contains {where}, where credentials live",
                    hint="credential folders (~/.ssh, ~/.aws, ~/.config, ~/.kube, ~/.docker and the like) "
                         "are never shared; share only the folder the agent needs")
    for own in own_dirs:
        own = own.resolve()
        if _within(path, own) or _within(own, path):
            raise InvalidInput(f"refusing to share {path}: it holds agentbox's own files ({own})",
                               hint="agentbox's keys, disks and logs are never shared")
    if not allow_system_folder:
        _refuse_system(path=path, home=home)
    return path


def _refuse_system(*, path: Path, home: Path) -> None:
    own_home = home != Path("/") and (str(home) == "/root" or str(home) not in SYSTEM_DIRS)
    if own_home and _within(path, home):
        return  # a folder of your own, even with a home of /root or under /var (the home rules above apply)
    for system in SYSTEM_DIRS:
        where = Path(system).resolve()  # /lib may be a link to /usr/lib
        if _within(path, where) or _within(where, path):
            raise InvalidInput(
                f"refusing to share {path}: it is or contains the system folder {system}",
                hint=f"system folders ({' '.join(SYSTEM_DIRS)}) are refused by default; "
                     f"{ALLOW_SYSTEM_OPTION} shares one anyway (read-only)")


def parse_share_spec(spec: str) -> tuple[str, str | None]:
    """`DIR[:TAG]` → (DIR, TAG or None). A colon belongs to the path unless a valid tag follows."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and _TAG.match(tail):
        return head, tail
    return spec, None


def default_tag(path: Path) -> str:
    """The folder's name, made into a valid tag (lowercase, dashes)."""
    tag = re.sub(r"[^a-z0-9-]+", "-", path.name.lower()).strip("-")[:63].rstrip("-")
    if not tag or not tag[0].isalpha():
        tag = f"share-{tag}".rstrip("-")[:63]
    return tag


def validate_tag(tag: str) -> str:
    validate_label(tag, what="share tag")
    if tag == OUTBOX_TAG:
        raise InvalidInput(f"{OUTBOX_TAG!r} is the outbox's tag", hint="pick another --tag")
    return tag


def _within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents
