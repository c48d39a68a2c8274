"""The ``lumos dev`` banner: errors of the last reload, from ``$LUMOS_HOME/dev-status.json``.

The dev loop (``lumos dev``) writes ``{"ok": bool, "errors": [{"file", "line",
"message"}], "reloaded_at": iso8601}`` after each reload; every dashboard page shows
the errors while ``ok`` is false. Read with bounds (size, count, lengths) since the
file is outside the gateway's control; a missing or unreadable file shows nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["MAX_STATUS_BYTES", "dev_errors"]

MAX_STATUS_BYTES = 64 * 1024
_MAX_ERRORS = 20


def _home() -> Path:
    return Path(os.environ.get("LUMOS_HOME") or Path.home() / ".lumos")


def dev_errors(path: Path | None = None) -> list[dict[str, Any]]:
    """The errors to show (file, line, message), or [] when all is well or unknown."""
    path = path or _home() / "dev-status.json"
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_STATUS_BYTES + 1)
    except OSError:
        return []
    if len(raw) > MAX_STATUS_BYTES:
        return [{"file": str(path), "line": 0, "message": "dev-status.json is too large"}]
    try:
        data = json.loads(raw)
    except ValueError:
        return []
    if not isinstance(data, dict) or data.get("ok") is not False:
        return []
    out = []
    for err in (data.get("errors") or [])[:_MAX_ERRORS]:
        if not isinstance(err, dict):
            continue
        line = err.get("line")
        out.append(
            {
                "file": str(err.get("file") or "")[:300],
                "line": line if isinstance(line, int) else 0,
                "message": str(err.get("message") or "")[:1000],
            }
        )
    return out
