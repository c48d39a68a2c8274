"""Resolve ``'package.module:attr'`` references from YAML into Python objects."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from lumos_ray.errors import ConfigError, WorkflowDefinitionError

__all__ = ["function_ref", "import_object"]


def import_object(ref: str) -> Any:
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"Invalid reference {ref!r}: expected 'package.module:attribute'.",
            fix="Write the import path of a module, a colon, then the attribute name.",
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"Cannot import module {module_name!r} (from {ref!r}): {exc}",
            fix="Check the module path, and that it is importable from the project "
            "directory (or installed).",
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"Module {module_name!r} has no attribute {attr!r}.") from None
    return obj


def _main_module_name() -> str | None:
    """The importable name of the running script (``__main__``), when importing it
    again would not re-run it: ``python -m pkg.mod`` gives ``pkg.mod``; ``python
    script.py`` gives ``script`` if the script guards its entry point with
    ``if __name__ == "__main__":`` (Ray puts the driver's script directory on its
    workers' ``sys.path``)."""
    import sys
    from pathlib import Path

    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return str(spec.name).removesuffix(".__main__")
    path = getattr(main, "__file__", None)
    if not path or not path.endswith(".py"):
        return None
    try:
        source = Path(path).read_text(errors="replace")
    except OSError:
        return None
    if "__name__" not in source or "__main__" not in source:
        return None
    stem = Path(path).stem
    return stem if stem.isidentifier() else None


def function_ref(fn: Callable[..., Any], what: str) -> str:
    """``module:qualname`` of a module-level function (or object), checked to import
    back to the very same object. Durable runs store these references, never code."""
    import sys

    target = getattr(fn, "__wrapped__", None) if not inspect.isroutine(fn) else None
    named = target if target is not None else fn  # a wrapper (a Tool) is named by what it wraps
    module = getattr(named, "__module__", None)
    qualname = getattr(named, "__qualname__", None)
    fix = (
        "Define it at the top level of an importable module (not inside a function, not a "
        "lambda) and make that module importable on the cluster, or give its import path "
        "as a string, 'package.module:name'. A script's own functions work when the "
        'script guards its entry point with `if __name__ == "__main__":`.'
    )
    if not module or not qualname or "<" in qualname:
        raise WorkflowDefinitionError(
            f"{what} ({qualname or fn!r} in module {module!r}) cannot be stored in a durable "
            "run: runs store import paths, never code.",
            fix=fix,
        )
    found: Any
    if module == "__main__":
        found = sys.modules["__main__"]
        for part in qualname.split("."):
            found = getattr(found, part, None)
        name = _main_module_name()
        if name is None or (found is not fn and found is not named):
            raise WorkflowDefinitionError(
                f"{what} ({qualname}) is defined in a script that cannot be imported again "
                "safely, and durable runs store import paths, never code.",
                fix=fix,
            )
        return f"{name}:{qualname}"
    ref = f"{module}:{qualname}"
    try:
        found = import_object(ref)
    except ConfigError:
        found = None
    if found is not fn and getattr(found, "__wrapped__", None) is not fn:
        raise WorkflowDefinitionError(
            f"{what}: {ref} does not import back to the same object.", fix=fix
        )
    return ref
