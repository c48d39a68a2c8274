"""Where ``lumos up`` records its cluster, and whether that cluster answers: read by
:func:`lumos_ray.runtime.connect` on every connection without an address (so this
module imports no Ray and nothing that connects)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lumos_ray.runtime._nodes import port_open

__all__ = [
    "STATE_FILE",
    "home_dir",
    "local_cluster_address",
    "read_cluster_state",
    "state_path",
    "use_token_auth",
]

STATE_FILE = "cluster.json"


def home_dir(home: str | Path | None) -> Path:
    return Path(home or os.environ.get("LUMOS_HOME") or ".lumos").expanduser().resolve()


def state_path(home: str | Path | None) -> Path:
    return home_dir(home) / STATE_FILE


def read_cluster_state(home: str | Path | None = None) -> dict[str, Any] | None:
    """What ``lumos up`` recorded, or None when no cluster was started from this home."""
    try:
        data = json.loads(state_path(home).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("address") else None


def local_cluster_address(home: str | Path | None = None) -> str | None:
    """The GCS address of this home's ``lumos up`` cluster if it answers, else None
    (a stale file from a crashed or rebooted machine is ignored)."""
    state = read_cluster_state(home)
    if not state:
        return None
    host, _, port = str(state["address"]).rpartition(":")
    return str(state["address"]) if port.isdigit() and port_open(host, int(port)) else None


def use_token_auth() -> None:
    """Ray 2.60 clusters started by ``ray start`` require token auth; Ray's client
    sends the token (``~/.ray/auth_token``, where Ray keeps it) only in token mode, and
    for an explicit address only when ``RAY_AUTH_MODE=token`` was set before Ray was
    imported in this process. A mode the user chose is kept."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
