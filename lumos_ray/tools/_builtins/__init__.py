"""Built-in tools, grouped by category (web, file, data, system, math, ai, database,
communication).

Each module defines its tools at import time as plain objects (no side effects);
:func:`builtin_tools` imports the modules only when someone asks for the list.
"""

from __future__ import annotations

import importlib

from lumos_ray.tools._tool import Tool

__all__ = ["CATEGORY_MODULES", "builtin_tools"]

#: category -> module under this package
CATEGORY_MODULES = {
    "web": "_web",
    "file": "_file",
    "data": "_data",
    "system": "_system",
    "math": "_math",
    "ai": "_ai",
    "database": "_database",
    "communication": "_comm",
}


def builtin_tools() -> list[Tool]:
    """Every built-in tool, marked with its category and ``source="builtin"``."""
    out: list[Tool] = []
    for category, mod_name in CATEGORY_MODULES.items():
        mod = importlib.import_module(f"{__name__}.{mod_name}")
        for t in mod.TOOLS:
            t.category = category
            t.source = "builtin"
            out.append(t)
    return out
