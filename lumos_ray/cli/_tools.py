"""`lumos tools ...`: list, inspect and try out tools (built-ins, registered, plugins)."""

from __future__ import annotations

import json
import warnings
from typing import Any

import click

from lumos_ray.cli._common import emit, json_option
from lumos_ray.errors import InputValidationError

__all__ = ["register"]


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "No tools found."
    w_name = max(len("NAME"), *(len(r["name"]) for r in rows))
    w_cat = max(len("CATEGORY"), *(len(r["category"] or "-") for r in rows))
    w_src = max(len("SOURCE"), *(len(r["source"]) for r in rows))
    lines = [f"{'NAME':<{w_name}}  {'CATEGORY':<{w_cat}}  {'SOURCE':<{w_src}}  DESCRIPTION"]
    for r in rows:
        desc = r["description"].split("\n", 1)[0]
        if len(desc) > 80:
            desc = desc[:77] + "..."
        lines.append(
            f"{r['name']:<{w_name}}  {(r['category'] or '-'):<{w_cat}}  "
            f"{r['source']:<{w_src}}  {desc}"
        )
    lines.append(f"\n{len(rows)} tools")
    return "\n".join(lines)


def _parse_json(value: str | None, what: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise InputValidationError(f"{what} is not valid JSON: {exc}") from None


def register(cli: click.Group) -> None:
    @cli.group("tools")
    def tools_group() -> None:
        """Tools agents can call: built-ins, registered tools and plugins."""

    @tools_group.command("list")
    @click.option("--category", default=None, help="Only tools of this category.")
    @click.option(
        "--source",
        type=click.Choice(["builtin", "plugin", "function"]),
        default=None,
        help="Only tools from this source.",
    )
    @json_option
    def list_cmd(category: str | None, source: str | None, as_json: bool) -> None:
        """List every tool: name, category, source (builtin/plugin) and description."""
        from lumos_ray.tools._api import list_tools

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tools = list_tools()
        rows = []
        for t in tools:
            if category and t.category != category:
                continue
            if source and t.source != source:
                continue
            d = t.to_dict()
            if not as_json:
                d.pop("parameters")
            rows.append(d)
        problems = [str(w.message) for w in caught if "plugin" in str(w.message)]
        for msg in problems:
            click.secho(f"warning: {msg}", fg="yellow", err=True)
        emit(rows, as_json, _table)

    @tools_group.command("show")
    @click.argument("name")
    @json_option
    def show_cmd(name: str, as_json: bool) -> None:
        """Show one tool's description and JSON Schema (what the model sees)."""
        from lumos_ray.tools._api import get_tool

        t = get_tool(name)
        data = t.to_dict()

        def human(d: dict[str, Any]) -> str:
            return (
                f"{d['name']}  ({d['category'] or '-'}, {d['source']})\n\n{d['description']}\n\n"
                f"Parameters (JSON Schema):\n{json.dumps(d['parameters'], indent=2)}"
            )

        emit(data, as_json, human)

    @tools_group.command("call")
    @click.argument("name")
    @click.option("--args", "args_json", default="{}", help="Arguments as a JSON object.")
    @click.option("--workspace", default=None, help="Workspace root for file tools.")
    @click.option(
        "--settings",
        "settings_json",
        default=None,
        help='Per-tool settings as JSON, e.g. \'{"http": {"allow_private": true}}\'.',
    )
    @json_option
    def call_cmd(
        name: str, args_json: str, workspace: str | None, settings_json: str | None, as_json: bool
    ) -> None:
        """Call a tool once in this process and print its result (for trying tools out)."""
        import asyncio

        from lumos_ray.tools._api import ToolContext, get_tool

        t = get_tool(name)
        args = _parse_json(args_json, "--args")
        settings = _parse_json(settings_json, "--settings") or {}
        ctx = ToolContext(workspace=workspace, settings=settings)
        result = asyncio.run(t.acall(args, ctx))
        emit(
            {"tool": name, "result": result},
            as_json,
            lambda d: (
                d["result"]
                if isinstance(d["result"], str)
                else json.dumps(d["result"], indent=2, ensure_ascii=False)
            ),
        )
