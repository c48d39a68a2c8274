"""Tools: typed Python functions that agents (and workflow steps) can call.

The public tool API in one import (``lumos_ray.tools`` re-exports it): the tool class
and ``@tool`` (``_tool``), the call context (``_context``), and lookup by name
(``_registry``: tools registered in this process, then the built-ins in
``lumos_ray.tools._builtins``, then plugins in the ``lumos_ray.tools`` entry-point
group). Nothing inside ``lumos_ray.tools`` imports this module, so it closes no cycle.
"""

from __future__ import annotations

from lumos_ray.tools._context import ToolContext
from lumos_ray.tools._redact import redact_arguments
from lumos_ray.tools._registry import get_tool, list_tools, register_tool, resolve_tools
from lumos_ray.tools._tool import CANCEL_GRACE_S, Tool, to_jsonable, tool

__all__ = [
    "CANCEL_GRACE_S",
    "Tool",
    "ToolContext",
    "get_tool",
    "list_tools",
    "redact_arguments",
    "register_tool",
    "resolve_tools",
    "to_jsonable",
    "tool",
]
