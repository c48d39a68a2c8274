"""`lumos workflows list|show`: the workflow definitions registered in the store."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import click

from lumos_ray.cli._common import emit, json_option

__all__ = ["register"]


def register(cli: click.Group) -> None:
    @cli.group("workflows")
    def workflows() -> None:
        """Registered workflow definitions (name and content-hash version)."""

    @workflows.command("list")
    @click.argument("name", required=False)
    @json_option
    def wf_list(name: str | None, as_json: bool) -> None:
        """List registered workflows (every version of NAME, when given)."""
        from lumos_ray.workflows._registered import list_registered_workflows

        rows = asyncio.run(list_registered_workflows(name))

        def human(items: list[dict[str, Any]]) -> str:
            if not items:
                return "no registered workflows (a run registers its workflow when it starts)"
            lines = [f"{'NAME':<30} {'VERSION':<18} REGISTERED"]
            for r in items:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"]))
                lines.append(f"{r['name']:<30} {r['version']:<18} {when}")
            return "\n".join(lines)

        emit(rows, as_json, human)

    @workflows.command("show")
    @click.argument("name")
    @click.option("--version", default=None, help="A registered version (default: newest).")
    @json_option
    def wf_show(name: str, version: str | None, as_json: bool) -> None:
        """Show a registered definition, as stored (data, never code)."""
        from lumos_ray.workflows._registered import get_registered_workflow

        row = asyncio.run(get_registered_workflow(name, version))
        emit(
            row,
            as_json,
            lambda r: (
                f"{r['name']} version {r['version']}\n"
                + json.dumps(r["body"], indent=2, sort_keys=True)
            ),
        )
