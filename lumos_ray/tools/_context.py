"""The call context a tool may ask for (a leaf module: the schema builder, the tool
class and the built-ins all need it, and it needs none of them)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ToolContext"]


@dataclass
class ToolContext:
    """What the caller knows about the call, injected into a ``ctx: ToolContext`` parameter.

    ``settings`` holds per-tool switches that widen what a tool may do (for example
    ``{"http": {"allow_private": True}}`` or ``{"sandbox": {"enabled": True}}``):
    safety is the default and every relaxation is explicit and visible in the call.
    """

    run_id: str | None = None
    thread_id: str | None = None
    #: Root for file tools; default: a private directory per run (see workspace_root).
    workspace: str | None = None
    #: Stable across retries of the same tool call: side-effecting tools pass it on
    #: (``send_email`` names its outbox file after it, ``webhook_post`` sends it as
    #: ``Idempotency-Key``) so a retried call does not act twice.
    idempotency_key: str | None = None
    settings: dict = field(default_factory=dict)
    tenant: str | None = None

    def setting(self, section: str, key: str, default: Any = None) -> Any:
        """``settings[section][key]`` or ``default``: the one way tools read switches."""
        sec = self.settings.get(section) or {}
        return sec.get(key, default) if isinstance(sec, dict) else default

    def workspace_root(self) -> Path:
        """The directory file tools are confined to (created on first use).

        An explicit ``workspace`` wins. Otherwise a call that belongs to a run gets
        that run's own directory, ``$LUMOS_HOME/workspaces/TENANT/RUN_ID`` (mode 0700,
        shared by the run's steps and agents, never by two runs); a call outside any
        run (``lumos tools call``, a direct agent turn) uses ``$LUMOS_HOME/workspace``,
        or, for a tenant other than ``default``, ``$LUMOS_HOME/workspaces/TENANT/.direct``
        (one tenant's direct turns never see another's files; no run id can name
        ``.direct``: leading dots are dropped from them).
        """
        if self.workspace:
            path = Path(self.workspace).expanduser().resolve()
            path.mkdir(parents=True, exist_ok=True)
            return path
        home = Path(os.environ.get("LUMOS_HOME") or ".lumos").expanduser().resolve()
        if self.run_id:
            parts = ["workspaces", _safe_part(self.tenant or "default"), _safe_part(self.run_id)]
        elif self.tenant and self.tenant != "default":
            parts = ["workspaces", _safe_part(self.tenant), ".direct"]
        else:
            parts = ["workspace"]
        path = home
        for part in parts:
            path = path / part
            if not path.is_dir():
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chmod(path, 0o700)  # mkdir's mode is masked by the umask
        return path


def _safe_part(name: str) -> str:
    """One path component from a run id or tenant: never '..', never a separator."""
    part = re.sub(r"[^A-Za-z0-9_.@=-]", "_", name)[:200].lstrip(".")
    return part or "_"
