"""YAML with line numbers, so every config error can say file:line and the field.

Only PyYAML's safe loader is used, and without aliases (`*name`): a few lines of nested
aliases stand for billions of values (an "alias bomb"), and agentbox's files never need
them. Values are constructed normally; a parallel walk of the composed node tree records
the line of every key and list item.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agentbox.errors import ConfigError

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class YamlDoc:
    path: Path
    value: Any
    lines: Mapping[KeyPath, int]

    def line_of(self, key_path: KeyPath) -> int:
        """Line of `key_path`, or of its nearest ancestor that has one."""
        for end in range(len(key_path), -1, -1):
            line = self.lines.get(key_path[:end])
            if line is not None:
                return line
        return 1

    def error(self, key_path: KeyPath, message: str, *, hint: str | None = None) -> ConfigError:
        field = dotted(key_path)
        where = f"{self.path}:{self.line_of(key_path)}"
        return ConfigError(f"{where}: {field + ': ' if field else ''}{message}", hint=hint)


def dotted(key_path: KeyPath) -> str:
    out = ""
    for part in key_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def load_yaml_file(*, path: Path) -> YamlDoc:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_yaml(text=text, path=path)


class _AliasFound(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _NoAliasLoader(yaml.SafeLoader):
    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            raise _AliasFound(self.peek_event().start_mark.line + 1)
        return super().compose_node(parent, index)


def parse_yaml(*, text: str, path: Path) -> YamlDoc:
    loader = _NoAliasLoader(text)
    try:
        node = loader.get_single_node()
        value = loader.construct_document(node) if node is not None else None
    except _AliasFound as exc:
        raise ConfigError(f"{path}:{exc.line}: YAML aliases (*name) are not allowed in agentbox's files",
                          hint="write the value out in full (nested aliases can stand for billions of values)"
                          ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError(
            f"{path}:{line}: invalid YAML: {exc.problem or exc.context}",
            hint="check indentation and quoting around that line",
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    lines: dict[KeyPath, int] = {}
    if node is not None:
        lines[()] = node.start_mark.line + 1
        _record_lines(node=node, key_path=(), lines=lines, path=path)
    return YamlDoc(path=path, value=value, lines=lines)


def _record_lines(*, node: yaml.Node, key_path: KeyPath, lines: dict[KeyPath, int], path: Path) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"{path}:{line}: {dotted(key_path + (key,))}: duplicate key")
            seen.add(key)
            lines[key_path + (key,)] = line
            _record_lines(node=value_node, key_path=key_path + (key,), lines=lines, path=path)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[key_path + (index,)] = item.start_mark.line + 1
            _record_lines(node=item, key_path=key_path + (index,), lines=lines, path=path)


class Fields:
    """Typed, checked access to one mapping of a YamlDoc; unknown keys are errors."""

    def __init__(self, *, doc: YamlDoc, key_path: KeyPath, allowed: frozenset[str]) -> None:
        self.doc = doc
        self.key_path = key_path
        value = _get(doc.value, key_path)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise doc.error(key_path, f"expected a mapping, got {_kind(value)}")
        for key in value:
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                raise doc.error(key_path + (str(key),), "unknown key", hint=f"known keys here: {known}")
        self.value: dict[str, Any] = value

    def has(self, key: str) -> bool:
        return key in self.value

    def sub(self, key: str, *, allowed: frozenset[str]) -> Fields:
        return Fields(doc=self.doc, key_path=self.key_path + (key,), allowed=allowed)

    def string(self, key: str, *, default: str | None = None) -> str:
        value = self.value.get(key)
        if value is None:
            if default is None:
                raise self.doc.error(self.key_path + (key,), "missing required field")
            return default
        if not isinstance(value, str) or not value.strip():
            raise self.doc.error(self.key_path + (key,), f"expected a non-empty string, got {_kind(value)}")
        return value

    def optional_string(self, key: str) -> str | None:
        return self.string(key) if self.value.get(key) is not None else None

    def integer(self, key: str, *, default: int, minimum: int, maximum: int) -> int:
        value = self.value.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.doc.error(self.key_path + (key,), f"expected an integer, got {_kind(value)}")
        if not minimum <= value <= maximum:
            raise self.doc.error(self.key_path + (key,), f"{value} is out of range {minimum}..{maximum}")
        return value

    def boolean(self, key: str, *, default: bool) -> bool:
        value = self.value.get(key, default)
        if not isinstance(value, bool):
            raise self.doc.error(self.key_path + (key,), f"expected true or false, got {_kind(value)}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.value.get(key) or []
        if not isinstance(value, list):
            raise self.doc.error(self.key_path + (key,), f"expected a list of strings, got {_kind(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise self.doc.error(self.key_path + (key, index), f"expected a string, got {_kind(item)}")
        return tuple(value)

    def mappings(self, key: str) -> tuple[dict[str, Any], ...]:
        value = self.value.get(key) or []
        if not isinstance(value, list):
            raise self.doc.error(self.key_path + (key,), f"expected a list of mappings, got {_kind(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.doc.error(self.key_path + (key, index), f"expected a mapping, got {_kind(item)}")
        return tuple(value)

    def error(self, key: str, message: str, *, hint: str | None = None) -> ConfigError:
        return self.doc.error(self.key_path + (key,), message, hint=hint)


def _get(value: Any, key_path: KeyPath) -> Any:
    for part in key_path:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            value = value[part]
        else:
            return None  # an absent section reads as empty
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"boolean {value!r}".lower()
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
