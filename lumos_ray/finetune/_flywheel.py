"""The data flywheel: agent runs -> dataset -> LoRA job -> hot-loaded adapter -> eval.

One call (``lumos finetune flywheel``, :func:`run_flywheel`) runs the stages in order,
timing each:

1. **export** the tenant's finished runs to chat-with-tools JSONL (:mod:`._export`);
2. **train** a LoRA (or QLoRA) adapter on it with the fine-tuning job: a Ray job on a
   cluster (``address``), else Ray Train in this process's cluster; the job registers
   the adapter in the registry the gateway reads;
3. **serve**: wait until the *running* gateway lists the adapter (it hot-loads
   registered adapters; nothing restarts);
4. **eval** base and adapter side by side on held-out tasks (:mod:`._eval`), through
   the gateway, and print the table.

The same stages are steps of a workflow (:func:`flywheel_workflow`), so a team can
register it and put it on a schedule: each stage is a checkpointed step, and a run
that dies mid-training resumes at the stage it was in (the job itself resumes from its
last checkpoint).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lumos_ray.errors import ServeError

__all__ = [
    "FlywheelResult",
    "FlywheelSpec",
    "flywheel_workflow",
    "load_flywheel_spec",
    "run_flywheel",
]


class FlywheelSpec(BaseModel):
    """Everything one turn of the flywheel needs (all of it data: a workflow input)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$", description="Adapter (and job) name."
    )
    base_model: str = Field(description="Directory of the base model the gateway serves.")
    served_base: str = Field(default="lumos-tiny", description="The base's served model name.")
    gateway_url: str = Field(description="The running gateway, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str | None = Field(default=None, description="Env var with a gateway key.")
    tasks_path: str = Field(description="Held-out tool-call tasks (JSONL, see `_eval`).")
    dataset_path: str = Field(description="Where the exported dataset is written.")
    export: dict[str, Any] = Field(
        default_factory=lambda: {"status": "succeeded", "require_tool_calls": True},
        description="Filters of the export (workflow, agent, status, since, until, "
        "min_score, require_tool_calls, max_row_bytes).",
    )
    skip_export: bool = Field(
        default=False, description="Train on dataset_path as it is (no export)."
    )
    job: dict[str, Any] = Field(
        default_factory=dict,
        description="Fine-tuning job fields (lora, optimizer, training, scaling, output).",
    )
    address: str | None = Field(
        default=None, description="Ray Jobs address: submit the training as a Ray job."
    )
    serve_timeout_s: float = Field(default=300.0, gt=0, le=3600)
    eval_concurrency: int = Field(default=4, ge=1, le=64)
    eval_timeout_s: float = Field(default=120.0, gt=0, le=3600)


def load_flywheel_spec(path: str | Path) -> FlywheelSpec:
    """A YAML flywheel spec; relative file paths in it are relative to the YAML file."""
    from lumos_ray.config import load_yaml_model

    spec = load_yaml_model(path, FlywheelSpec)
    here = Path(path).resolve().parent
    updates = {}
    for key in ("base_model", "tasks_path", "dataset_path"):
        value = getattr(spec, key)
        if value and not Path(value).expanduser().is_absolute():
            updates[key] = str(here / value)
    return spec.model_copy(update=updates)


class FlywheelResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    stages: dict[str, float]  # seconds per stage
    export: dict[str, Any] | None
    training: dict[str, Any]
    base: dict[str, Any]
    adapter: dict[str, Any]
    table: str


def job_spec(spec: FlywheelSpec) -> Any:
    """The fine-tuning job the flywheel submits: the exported data, the adapter name,
    registered where the gateway looks."""
    from lumos_ray.finetune._spec import FinetuneJobSpec

    body: dict[str, Any] = {
        "name": spec.name,
        "base_model": spec.base_model,
        "dataset": {"path": spec.dataset_path, "format": "chat"},
        **spec.job,
    }
    body.setdefault("output", {})
    body["output"] = {**body["output"], "register_adapter": True, "adapter_name": spec.name}
    return FinetuneJobSpec.model_validate(body)


# -- stages (module-level functions: also the steps of the flywheel workflow) --------
def stage_export(spec: dict[str, Any]) -> dict[str, Any]:
    from lumos_ray.finetune._export import export_dataset

    s = FlywheelSpec.model_validate(spec)
    t0 = time.perf_counter()
    if s.skip_export:
        return {"rows": None, "skipped": True, "seconds": 0.0}
    stats = export_dataset(s.dataset_path, **s.export)
    if stats.rows == 0:
        from lumos_ray.errors import DatasetError

        raise DatasetError(
            f"The export for {s.name!r} found no rows to train on ({stats.runs_seen} runs read).",
            fix="Run the agent workflows first, or loosen the export filters "
            "(status, workflow, min_score, require_tool_calls).",
        )
    return {**stats.to_dict(), "seconds": round(time.perf_counter() - t0, 3)}


def stage_train(spec: dict[str, Any], log: Callable[[str], None] | None = None) -> dict[str, Any]:
    from lumos_ray.finetune._jobs import follow_job, submit_job
    from lumos_ray.finetune._runner import run_finetune

    s = FlywheelSpec.model_validate(spec)
    job = job_spec(s)
    t0 = time.perf_counter()
    if s.address:
        job_id = submit_job(job, s.address)
        info = follow_job(s.address, job_id)
        out = {"job_id": job_id, **(info.result or {}), "status": info.status}
    else:
        out = run_finetune(job, log=log or (lambda line: None)).model_dump(mode="json")
    metrics = out.get("metrics") or {}
    secs = time.perf_counter() - t0
    out["seconds"] = round(secs, 3)
    tokens = metrics.get("tokens_seen") or metrics.get("tokens")
    if isinstance(tokens, int | float) and secs > 0:
        out["tokens_per_s_wall"] = round(float(tokens) / secs, 1)
    return out


def _served_models(url: str, key: str | None) -> list[str]:
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    root = url.rstrip("/").removesuffix("/v1")
    r = httpx.get(f"{root}/v1/models", headers=headers, timeout=30)
    r.raise_for_status()
    return [str(m.get("id")) for m in r.json().get("data", [])]


def stage_serve(spec: dict[str, Any]) -> dict[str, Any]:
    """Wait until the running gateway lists the adapter (no restart)."""
    import os

    s = FlywheelSpec.model_validate(spec)
    key = os.environ.get(s.api_key_env) if s.api_key_env else None
    t0 = time.perf_counter()
    deadline = t0 + s.serve_timeout_s
    last: list[str] = []
    while time.perf_counter() < deadline:
        try:
            last = _served_models(s.gateway_url, key)
        except Exception:
            last = []
        if s.name in last:
            return {"listed": True, "seconds": round(time.perf_counter() - t0, 3)}
        time.sleep(1.0)
    raise ServeError(
        f"The gateway at {s.gateway_url} did not list adapter {s.name!r} within "
        f"{s.serve_timeout_s:.0f} s (it lists: {', '.join(last[:10]) or 'nothing'}).",
        fix="Check that the gateway reads the registry the job wrote to "
        "(serve config adapters_dir = the job's output.registry_dir).",
    )


def stage_eval(spec: dict[str, Any]) -> dict[str, Any]:
    import os

    from lumos_ray.finetune._eval import evaluate_tool_calls, format_reports, load_tasks

    s = FlywheelSpec.model_validate(spec)
    key = os.environ.get(s.api_key_env) if s.api_key_env else None
    tasks = load_tasks(s.tasks_path)
    t0 = time.perf_counter()

    async def both() -> list[Any]:
        out = []
        for model in (s.served_base, s.name):
            out.append(
                await evaluate_tool_calls(
                    s.gateway_url,
                    model,
                    tasks,
                    api_key=key,
                    concurrency=s.eval_concurrency,
                    timeout_s=s.eval_timeout_s,
                )
            )
        return out

    base, adapter = asyncio.run(both())
    return {
        "base": base.to_dict(),
        "adapter": adapter.to_dict(),
        "table": format_reports([base, adapter]),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def run_flywheel(spec: FlywheelSpec, *, log: Callable[[str], None] | None = None) -> FlywheelResult:
    """Run the four stages in order in this process (see the module doc)."""
    say = log or (lambda line: None)
    data = spec.model_dump(mode="json")
    Path(spec.dataset_path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    say("flywheel: export")
    exported = stage_export(data)
    say(f"flywheel: train ({exported.get('rows')} rows)")
    trained = stage_train(data, log)
    say("flywheel: wait for the gateway to serve the adapter")
    served = stage_serve(data)
    say("flywheel: evaluate base vs adapter")
    evaluated = stage_eval(data)
    return FlywheelResult(
        name=spec.name,
        stages={
            "export_s": float(exported["seconds"]),
            "train_s": float(trained["seconds"]),
            "serve_s": float(served["seconds"]),
            "eval_s": float(evaluated["seconds"]),
        },
        export=None if spec.skip_export else exported,
        training=trained,
        base=evaluated["base"],
        adapter=evaluated["adapter"],
        table=evaluated["table"],
    )


def flywheel_workflow(name: str = "lumos-flywheel") -> Any:
    """The flywheel as a workflow of four function steps; its input is a
    :class:`FlywheelSpec` as a dict. Register it and schedule it like any workflow."""
    from lumos_ray.workflows import FunctionStep, Workflow

    here = "lumos_ray.finetune._flywheel"
    spec = {"spec": "{{ input }}"}
    return Workflow(
        name=name,
        steps=[
            FunctionStep(id="export", function=f"{here}:stage_export", args=spec),
            FunctionStep(id="train", function=f"{here}:stage_train", args=spec),
            FunctionStep(id="serve", function=f"{here}:stage_serve", args=spec),
            FunctionStep(id="eval", function=f"{here}:stage_eval", args=spec),
        ],
        output="{{ state.eval }}",
    )
