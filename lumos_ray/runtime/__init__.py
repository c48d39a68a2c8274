"""The one seam to Ray core: connect/start a cluster, actors by name, settings.

Everything else in lumos_ray reaches Ray through this package (see
``tests/unit/test_layout.py`` for the short allowlist of modules that may import
``ray`` themselves, each with its reason).
"""

from __future__ import annotations

from lumos_ray.runtime._cluster import (
    RuntimeInfo,
    connect,
    current_settings,
    get_or_create_actor,
    jobs_auth_headers,
    shutdown,
)

__all__ = [
    "RuntimeInfo",
    "connect",
    "current_settings",
    "get_or_create_actor",
    "jobs_auth_headers",
    "shutdown",
]
