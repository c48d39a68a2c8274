"""Resolve ``'package.module:attr'`` references from YAML into Python objects."""

from __future__ import annotations

import importlib
from typing import Any

from lumos_ray.errors import ConfigError

__all__ = ["import_object"]


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
