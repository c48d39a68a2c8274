"""`lumos init` and `lumos demo`."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import click

from lumos_ray.cli._common import emit, json_option
from lumos_ray.errors import ConfigError

__all__ = ["register"]


def register(cli: click.Group) -> None:
    @cli.command("init")
    @click.argument("directory", default=".", type=click.Path(file_okay=False))
    @click.option("--force", is_flag=True, help="Overwrite files that already exist.")
    @json_option
    def init(directory: str, force: bool, as_json: bool) -> None:
        """Scaffold a project: a workflow, Python steps and tools, a README."""
        src = resources.files("lumos_ray") / "templates" / "project"
        dest = Path(directory)
        written: list[str] = []
        with resources.as_file(src) as root:
            for f in sorted(p for p in Path(root).rglob("*") if p.is_file()):
                rel = f.relative_to(root)
                if "__pycache__" in rel.parts:
                    continue
                target = dest / rel
                if target.exists() and not force:
                    raise ConfigError(
                        f"{target} already exists.",
                        fix="Use an empty directory, or pass --force to overwrite.",
                    )
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, target)
                written.append(str(target))
        emit(
            {"directory": str(dest.resolve()), "files": written},
            as_json,
            lambda d: "\n".join(
                [f"created {f}" for f in d["files"]]
                + [
                    "",
                    f"next: cd {directory} && lumos run configs/workflows/hello.yaml "
                    '--input \'{"topic": "Ray actors"}\'',
                ]
            ),
        )

    @cli.command("demo")
    @click.option(
        "--test-model",
        is_flag=True,
        help="Use the scripted teacher model instead of serving lumos-tiny-tools with vLLM (fast).",
    )
    @json_option
    def demo(test_model: bool, as_json: bool) -> None:
        """Run the main job on an embedded local cluster: an agent on the served demo
        model answers three questions with tools, and the answers are checked."""
        from lumos_ray._demo import run_demo

        if not as_json:
            click.echo(
                "Starting an embedded Ray cluster"
                + ("" if test_model else ", serving lumos-tiny-tools with vLLM (about a minute)")
                + " ..."
            )
        result = run_demo(use_test_model=test_model)
        emit(result, as_json, _demo_text)
        if result["run"]["status"] != "succeeded":
            raise SystemExit(1)


def _demo_text(r: dict[str, Any]) -> str:
    run = r["run"]
    lines = []
    if r.get("gateway"):
        lines.append(f"gateway: {r['gateway']} (OpenAI-compatible), model {r.get('model')}")
    for ev in r["events"]:
        if ev["type"] == "token":
            continue
        data = {k: v for k, v in (ev["data"] or {}).items() if k != "t"}
        lines.append(f"[{ev['seq']:>3}] {ev['type']:<14} {json.dumps(data, default=str)[:110]}")
    lines.append(f"run {run['id']}: {run['status']}")
    out = run["output"]
    if run["status"] == "succeeded" and isinstance(out, dict) and "answers" in out:
        # Step paths read "0.work/1.ask_1": the last part names the question's step.
        calls = {
            str(ev["data"].get("step", "")).rsplit(".", 1)[-1]: ev["data"]
            for ev in r["events"]
            if ev["type"] == "tool_call"
        }
        for i, row in enumerate(out["answers"]):
            call = calls.get(f"ask_{i}")
            called = f"{call['tool']}({call.get('arguments')})" if call else "(no tool call)"
            mark = "correct" if row["correct"] else f"WRONG (the tool says {row['tool_result']})"
            lines += [
                f"Q: {row['question']}",
                f"   tool call: {called}",
                f"   answer: {row['answer']}  [{mark}]",
            ]
        lines.append(f"{out['correct']} of {out['of']} answers correct")
    else:
        lines.append(json.dumps(out or run["error"], indent=2, default=str)[:2000])
    lines.append(f"inspect it: lumos runs show {run['id']}")
    return "\n".join(lines)
