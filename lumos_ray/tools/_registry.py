"""Where tools are found: this process's registry, the built-ins, then plugins.

Plugins are third-party distributions that declare tools in the ``lumos_ray.tools``
entry-point group; each entry point loads a Tool, a plain function, or a list of
either. A plugin that fails to import is reported by name (a warning) and skipped,
so one broken package never hides every other tool.
"""

from __future__ import annotations

import difflib
import threading
import warnings
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from lumos_ray.errors import ConfigError, NotFoundError
from lumos_ray.tools._tool import Tool

__all__ = [
    "ENTRY_POINT_GROUP",
    "all_tools",
    "builtins",
    "get",
    "get_tool",
    "list_tools",
    "plugins",
    "register",
    "register_tool",
    "resolve_tools",
]

ENTRY_POINT_GROUP = "lumos_ray.tools"

_lock = threading.Lock()
_registered: dict[str, Tool] = {}
_builtins: dict[str, Tool] | None = None


def register(t: Tool) -> Tool:
    with _lock:
        _registered[t.name] = t
    return t


def unregister(name: str) -> None:
    with _lock:
        _registered.pop(name, None)


def builtins() -> dict[str, Tool]:
    """Built-in tools by name (their modules are imported on first use)."""
    global _builtins
    if _builtins is None:
        from lumos_ray.tools._builtins import builtin_tools

        _builtins = {t.name: t for t in builtin_tools()}
    return _builtins


def plugins() -> dict[str, Tool]:
    """Tools from installed plugin distributions, read fresh on every call.

    Not cached: a package installed while the process runs (or a test's temporary
    dist-info) is seen on the next lookup; reading the metadata is cheap.
    """
    found: dict[str, Tool] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
            tools = _as_tools(loaded)
        except Exception as exc:
            warnings.warn(
                f"lumos_ray tool plugin {ep.name!r} ({ep.value}) could not be loaded and is "
                f"skipped: {type(exc).__name__}: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )
            continue
        for t in tools:
            t.source = "plugin"
            t.category = t.category or "plugin"
            found.setdefault(t.name, t)
    return found


def _as_tools(obj: Any) -> list[Tool]:
    items = obj if isinstance(obj, list | tuple) else [obj]
    out = []
    for item in items:
        if isinstance(item, Tool):
            out.append(item)
        elif callable(item):
            out.append(Tool(item))
        else:
            raise TypeError(f"expected a Tool, a function or a list of them, got {item!r}")
    return out


def get(name: str) -> Tool:
    with _lock:
        if name in _registered:
            return _registered[name]
    b = builtins()
    if name in b:
        return b[name]
    p = plugins()
    if name in p:
        return p[name]
    known = sorted({*_registered, *b, *p})
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise NotFoundError(
        f"Unknown tool {name!r}.{hint} See `lumos tools list` for every tool.",
        tool=name,
        close_matches=close,
    )


def all_tools() -> list[Tool]:
    merged: dict[str, Tool] = {}
    merged.update(plugins())
    merged.update(builtins())
    with _lock:
        merged.update(_registered)
    return [merged[k] for k in sorted(merged)]


def register_tool(t: Tool | Callable[..., Any]) -> Tool:
    """Register a tool in this process (it then shadows a built-in or plugin of that name)."""
    if not isinstance(t, Tool):
        t = Tool(t)
    return register(t)


def get_tool(name: str) -> Tool:
    """The tool called ``name``: registered, then built-in, then plugin.

    Unknown names raise NotFoundError listing the closest known names.
    """
    return get(name)


def list_tools() -> list[Tool]:
    """Every tool known here: built-ins, registered tools and plugins (sorted by name)."""
    return all_tools()


def resolve_tools(items: list[str | Tool | Callable[..., Any]] | None) -> list[Tool]:
    """Turn names, Tools and plain functions into Tools (names must be unique)."""
    out: list[Tool] = []
    seen: set[str] = set()
    for item in items or []:
        if isinstance(item, Tool):
            t = item
        elif isinstance(item, str):
            t = get_tool(item)
        elif callable(item):
            t = Tool(item)
        else:
            raise ConfigError(
                f"Cannot use {item!r} as a tool: give a tool name, a Tool or a function."
            )
        if t.name in seen:
            raise ConfigError(f"Tool {t.name!r} is listed twice; tool names must be unique.")
        seen.add(t.name)
        out.append(t)
    return out
