"""Workspace names: DNS labels, because they become host names and SSH aliases."""

from __future__ import annotations

import re

from agentbox.errors import InvalidInput

NAME_RULE = (
    "1-63 characters: lowercase letters a-z, digits 0-9 and '-', "
    "starting with a letter and not ending with '-'"
)
_LABEL = re.compile(r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def validate_workspace_name(name: str) -> str:
    """Return `name` if it is a valid workspace name, else raise InvalidInput with the rule."""
    if not _LABEL.match(name):
        shown = name if name else "(empty)"
        raise InvalidInput(
            f"invalid workspace name {shown!r}: names must be {NAME_RULE}",
            hint="for example: my-agent-1",
        )
    return name


def validate_label(label: str, *, what: str) -> str:
    """Checkpoint labels and share tags follow the same rule as workspace names."""
    if not _LABEL.match(label):
        shown = label if label else "(empty)"
        raise InvalidInput(f"invalid {what} {shown!r}: it must be {NAME_RULE}", hint="for example: before-upgrade")
    return label
