"""What a provider's response says it cost: the `usage` object of its JSON, or of the events
of a stream (server-sent events), read as the bytes pass through, never stored.

Anthropic reports `input_tokens` in `message_start` and a running `output_tokens` in
`message_delta`; OpenAI reports `prompt_tokens`/`completion_tokens` (or `input_tokens`/
`output_tokens` in its Responses API) once. Counts are cumulative where repeated, so the
largest value seen per field is the one that counts.
"""

from __future__ import annotations

import json
from typing import Any

MAX_JSON_BYTES = 8 * 1024 * 1024  # a larger plain JSON response is passed through unread
MAX_LINE_BYTES = 1024 * 1024
_COUNTED = ("input_tokens", "output_tokens", "prompt_tokens", "completion_tokens",
            "cache_creation_input_tokens", "cache_read_input_tokens")


class UsageScanner:
    def __init__(self, *, content_type: str) -> None:
        self._stream = "text/event-stream" in content_type.lower()
        self._json = "json" in content_type.lower()
        self._buffer = bytearray()
        self._overflow = False
        self._seen: dict[str, int] = {}

    def feed(self, chunk: bytes) -> None:
        if self._overflow or not (self._stream or self._json):
            return
        self._buffer += chunk
        if self._stream:
            *lines, rest = self._buffer.split(b"\n")
            self._buffer = bytearray(rest)
            for line in lines:
                self._event_line(bytes(line))
            if len(self._buffer) > MAX_LINE_BYTES:
                self._overflow = True
        elif len(self._buffer) > MAX_JSON_BYTES:
            self._overflow = True

    def tokens(self) -> int:
        """Tokens reported so far (for a plain JSON body: once it is complete)."""
        if self._json and not self._stream and not self._overflow and self._buffer:
            self._take(_loads(bytes(self._buffer)))
            self._buffer.clear()
        seen = self._seen
        if "input_tokens" in seen or "output_tokens" in seen:
            return sum(seen.get(k, 0) for k in _COUNTED if k not in ("prompt_tokens", "completion_tokens"))
        return seen.get("prompt_tokens", 0) + seen.get("completion_tokens", 0)

    def _event_line(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        if line.startswith(b"data:"):
            self._take(_loads(line[5:].strip()))

    def _take(self, doc: Any) -> None:
        for usage in _usages(doc, depth=0):
            for key in _COUNTED:
                value = usage.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                    self._seen[key] = max(self._seen.get(key, 0), value)


def request_model(body: bytes, *, content_type: str) -> str:
    """The `model` a JSON request names ("" when it names none or is not JSON)."""
    if "json" not in content_type.lower() or len(body) > MAX_JSON_BYTES:
        return ""
    doc = _loads(body)
    model = doc.get("model") if isinstance(doc, dict) else None
    return model[:200] if isinstance(model, str) else ""


def _loads(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None


def _usages(doc: Any, *, depth: int) -> list[dict[str, Any]]:
    """Every `usage` object in the document (a stream event nests it in `message` or `response`)."""
    if not isinstance(doc, dict) or depth > 3:
        return []
    found = [doc["usage"]] if isinstance(doc.get("usage"), dict) else []
    for value in doc.values():
        if isinstance(value, dict):
            found += _usages(value, depth=depth + 1)
    return found
