"""Tools: the ``@tool`` API, JSON-Schema generation, the registry (with plugins from
the ``lumos_ray.tools`` entry-point group) and the built-in tools."""

from __future__ import annotations

from lumos_ray.tools._api import (
    Tool,
    ToolContext,
    get_tool,
    list_tools,
    register_tool,
    resolve_tools,
    tool,
)

__all__ = [
    "Tool",
    "ToolContext",
    "get_tool",
    "list_tools",
    "register_tool",
    "resolve_tools",
    "tool",
]
