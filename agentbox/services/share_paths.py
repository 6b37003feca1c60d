"""Which host folders may be shared into a guest, and the tag a share gets by default."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from agentbox.errors import InvalidInput
from agentbox.model.names import validate_label

OUTBOX_TAG = "agentbox-outbox"
_SECRET_DIRS = (".ssh", ".gnupg")
_TAG = re.compile(r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def validate_share_source(*, source: str, home: Path, own_dirs: Iterable[Path]) -> Path:
    """The resolved folder, or InvalidInput saying why it may not be shared."""
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
    for secret in _SECRET_DIRS:
        if _within(path, home / secret):
            raise InvalidInput(f"refusing to share {path}: it is (inside) {home / secret}, where your keys live")
    if _within(home, path):
        raise InvalidInput(f"refusing to share {path}: it contains your home folder {home}",
                           hint="share only the folder the agent needs")
    for own in own_dirs:
        own = own.resolve()
        if _within(path, own) or _within(own, path):
            raise InvalidInput(f"refusing to share {path}: it holds agentbox's own files ({own})",
                               hint="agentbox's keys, disks and logs are never shared")
    return path


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
