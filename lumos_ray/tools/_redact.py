"""Redaction of tool arguments named like secrets, for events, spans and storage.

A model may pass an API key or an ``Authorization`` header to a tool; the tool needs
it, but the events streamed to callers, the spans exported to a collector and the
thread messages and checkpoints written to the store do not. Values under keys that
look like secrets (at any depth) are replaced with ``[REDACTED]``; arguments that are
not valid JSON are scrubbed textually.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = [
    "REDACTED",
    "is_secret_name",
    "redact_arguments",
    "redact_message",
    "redact_value",
]

REDACTED = "[REDACTED]"

#: Fragments of argument names that hold secrets (matched case-insensitively, with
#: '-' and ' ' read as '_', anywhere in the name: ``Proxy-Authorization``,
#: ``github_token`` and ``X-Api-Key`` all match).
_SECRET_PARTS = (
    "authorization",
    "api_key",
    "apikey",
    "token",
    "password",
    "passwd",
    "passphrase",
    "secret",
    "private_key",
    "cookie",
    "credential",
    "session_key",
    "signature",
)
_TEXTUAL = re.compile(
    r'("[^"]*(?:'
    + "|".join(p.replace("_", "[_\\- ]?") for p in _SECRET_PARTS)
    + r')[^"]*"\s*:\s*)("(?:[^"\\]|\\.)*"|[^,}\]\s]+)',
    re.IGNORECASE,
)


def is_secret_name(name: str) -> bool:
    """True for argument names that look like they hold a secret."""
    n = name.lower().replace("-", "_").replace(" ", "_")
    return any(p in n for p in _SECRET_PARTS)


def redact_value(value: Any) -> Any:
    """A copy of ``value`` with every value under a secret-looking key replaced."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and is_secret_name(k) else redact_value(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    return value


def redact_arguments(arguments: str | dict[str, Any] | None) -> str:
    """Tool-call arguments (the JSON text a chat API delivers, or a dict) as JSON text
    with secrets redacted; malformed JSON is scrubbed with a pattern instead."""
    if arguments is None:
        return "{}"
    if isinstance(arguments, dict):
        return json.dumps(redact_value(arguments), default=str)
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return _TEXTUAL.sub(lambda m: m.group(1) + json.dumps(REDACTED), arguments)
    cleaned = redact_value(parsed)
    return arguments if cleaned == parsed else json.dumps(cleaned, default=str)


def redact_message(message: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-format chat message as it may be stored: an assistant message whose
    ``tool_calls[].function.arguments`` hold secret-named values is copied with them
    redacted; any other message (and one with nothing to redact) is returned as is."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list) or not calls:
        return message
    out: list[Any] = []
    changed = False
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("arguments"), str | dict):
            out.append(call)
            continue
        args = fn["arguments"]
        shown = redact_arguments(args) if isinstance(args, str) else redact_value(args)
        if shown == fn["arguments"]:
            out.append(call)
            continue
        changed = True
        out.append({**call, "function": {**fn, "arguments": shown}})
    return {**message, "tool_calls": out} if changed else message
