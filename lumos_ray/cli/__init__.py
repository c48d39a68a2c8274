"""The `lumos` command line: a thin client of the cluster-side services.

Each command group lives in its own ``_*.py`` module with a ``register(group)``
function; this module only assembles them and turns errors into a message and a
fix (``--json``: a JSON object) instead of a stack trace.
"""

from __future__ import annotations

import importlib
import importlib.util

from lumos_ray.cli._common import cli, run_cli

__all__ = ["cli", "main"]

# Command modules, in help order. A module that is absent is skipped, so optional
# subsystems can land independently.
_COMMAND_MODULES = (
    "_project",
    "_cluster",
    "_dev",
    "_runs",
    "_history",
    "_workflows",
    "_jobs",
    "_tools",
    "_models",
    "_serve",
    "_finetune",
    "_federate",
    "_rag",
    "_platform",
)


def _load_commands() -> None:
    for name in _COMMAND_MODULES:
        full = f"{__name__}.{name}"
        if importlib.util.find_spec(full) is not None:
            importlib.import_module(full).register(cli)


def main(argv: list[str] | None = None) -> None:
    _load_commands()
    run_cli(argv)
