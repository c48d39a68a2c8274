"""The call context a tool may ask for (a leaf module: the schema builder, the tool
class and the built-ins all need it, and it needs none of them)."""

from __future__ import annotations

import os
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
    workspace: str | None = None  # root for file tools (default: $LUMOS_HOME/workspace)
    idempotency_key: str | None = None
    settings: dict = field(default_factory=dict)

    def setting(self, section: str, key: str, default: Any = None) -> Any:
        """``settings[section][key]`` or ``default``: the one way tools read switches."""
        sec = self.settings.get(section) or {}
        return sec.get(key, default) if isinstance(sec, dict) else default

    def workspace_root(self) -> Path:
        """The directory file tools are confined to (created on first use)."""
        root = self.workspace or os.path.join(os.environ.get("LUMOS_HOME") or ".lumos", "workspace")
        path = Path(root).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path
