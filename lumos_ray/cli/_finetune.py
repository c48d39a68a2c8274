"""`lumos finetune ...`: submit LoRA/QLoRA jobs as Ray jobs and follow them."""

from __future__ import annotations

import time
from typing import Any

import click

from lumos_ray.cli._common import address_option, emit, json_option

__all__ = ["register"]


@click.group("finetune")
def finetune() -> None:
    """LoRA / QLoRA fine-tuning jobs (Ray Train, submitted through the Ray Jobs API)."""


class _Bar:
    """A one-line progress bar: step, loss, eval loss, tokens/s, ETA."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.total = 0
        self.eval_loss: float | None = None
        self._last = ""

    def update(self, ev: dict[str, Any]) -> None:
        if not self.enabled:
            return
        kind = ev.get("event")
        if kind == "start":
            self.total = int(ev.get("total_steps") or 0)
            resumed = ev.get("resumed_from_step") or 0
            note = f" (resumed at step {resumed})" if resumed else ""
            click.echo(
                f"training on {ev.get('world_size')} worker(s), {self.total} steps{note}; "
                f"base eval loss {float(ev.get('base_eval_loss') or 0):.4f}",
                err=True,
            )
        elif kind == "eval":
            self.eval_loss = float(ev["eval_loss"])
        elif kind == "checkpoint":
            return
        elif kind == "step":
            self.total = int(ev.get("total_steps") or self.total)
            step = int(ev["step"])
            width = 24
            filled = int(width * step / max(self.total, 1))
            ev_txt = f" eval {self.eval_loss:.4f}" if self.eval_loss is not None else ""
            line = (
                f"\r[{'#' * filled}{'.' * (width - filled)}] {step}/{self.total} "
                f"loss {float(ev['loss']):.4f}{ev_txt} "
                f"{float(ev.get('tokens_per_s') or 0):.0f} tok/s "
                f"ETA {_fmt_s(float(ev.get('eta_s') or 0))}"
            )
            self._last = line
            click.echo(line, nl=False, err=True)
        elif kind == "done":
            if self._last:
                click.echo("", err=True)
            click.echo(
                f"done: step {ev.get('step')}, eval loss {float(ev.get('eval_loss') or 0):.4f} "
                f"(base {float(ev.get('base_eval_loss') or 0):.4f})",
                err=True,
            )


def _fmt_s(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _result_text(res: dict[str, Any]) -> str:
    m = res.get("metrics") or {}
    lines = [
        f"job {res.get('name')}: adapter {res.get('adapter_name') or '(not registered)'}",
        f"  adapter dir: {res.get('adapter_dir')}",
        f"  eval loss {m.get('eval_loss')} (base {m.get('base_eval_loss')}), "
        f"steps {m.get('step')}, resumed from {m.get('resumed_from_step')}",
    ]
    if res.get("merged_dir"):
        lines.append(f"  merged model: {res['merged_dir']}")
    return "\n".join(lines)


@finetune.command("validate")
@click.argument("job_file", type=click.Path(dir_okay=False))
@json_option
def validate_cmd(job_file: str, as_json: bool) -> None:
    """Check JOB_FILE (spec, dataset lines, base model, target modules) without training."""
    from lumos_ray.finetune import load_job_spec, preflight

    spec = load_job_spec(job_file)
    preflight(spec)
    emit(
        {"valid": True, "name": spec.name, "spec": spec.model_dump(mode="json")},
        as_json,
        f"{job_file}: valid ({spec.name})",
    )


@finetune.command("submit")
@click.argument("job_file", type=click.Path(dir_okay=False))
@address_option
@click.option("--wait", is_flag=True, help="Follow the job until it ends (progress bar).")
@click.option("--timeout", "timeout_s", type=float, default=None, help="Give up waiting after N s.")
@json_option
def submit_cmd(
    job_file: str, address: str | None, wait: bool, timeout_s: float | None, as_json: bool
) -> None:
    """Submit JOB_FILE as a Ray job (or, with no --address, run it in-process on an
    embedded cluster). Submitting a job name again resumes from its last checkpoint."""
    from lumos_ray.finetune import follow_job, load_job_spec, submit_job

    spec = load_job_spec(job_file)
    bar = _Bar(enabled=not as_json)
    if not address or address == "local":
        res = _run_embedded(spec, bar)
        emit(res, as_json, _result_text)
        return
    job_id = submit_job(spec, address)
    if not wait:
        emit(
            {"job_id": job_id, "name": spec.name, "status": "PENDING"},
            as_json,
            f"submitted {job_id}\n  follow: lumos finetune status {job_id} --address {address}",
        )
        return
    if not as_json:
        click.echo(f"submitted {job_id}", err=True)
    info = follow_job(address, job_id, on_progress=bar.update, timeout_s=timeout_s)
    data = {"job_id": job_id, **(info.result or {}), "status": info.status}
    emit(data, as_json, _result_text)


def _run_embedded(spec: Any, bar: _Bar) -> dict[str, Any]:
    from lumos_ray import runtime
    from lumos_ray.finetune import parse_progress_line, run_finetune

    def sink(line: str) -> None:
        ev = parse_progress_line(line)
        if ev is not None:
            bar.update(ev)

    runtime.connect()
    try:
        return run_finetune(spec, log=sink).model_dump(mode="json")
    finally:
        runtime.shutdown()


def _status_text(info: dict[str, Any]) -> str:
    lines = [f"{info['job_id']}  {info.get('name') or ''}  {info['status']}"]
    p = info.get("progress") or {}
    if p:
        lines.append(
            f"  step {p.get('step')}/{p.get('total_steps')} loss {p.get('loss')} "
            f"eval {p.get('eval_loss')} tok/s {p.get('tokens_per_s')} ETA {p.get('eta_s')}"
        )
    if info.get("error"):
        lines.append(f"  error: {info['error'].get('message')}")
    if info.get("result"):
        lines.append(
            f"  adapter: {info['result'].get('adapter_name')} -> "
            f"{info['result'].get('adapter_dir')}"
        )
    return "\n".join(lines)


@finetune.command("status")
@click.argument("job_id")
@address_option
@json_option
def status_cmd(job_id: str, address: str | None, as_json: bool) -> None:
    """Status and latest progress of JOB_ID."""
    from lumos_ray.finetune import get_job

    emit(get_job(address, job_id).model_dump(mode="json"), as_json, _status_text)


@finetune.command("logs")
@click.argument("job_id")
@address_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends.")
@json_option
def logs_cmd(job_id: str, address: str | None, follow: bool, as_json: bool) -> None:
    """The job's log (driver output, progress lines)."""
    from lumos_ray.finetune import follow_job, job_logs

    if follow and not as_json:
        follow_job(address, job_id, on_progress=None, on_line=click.echo)
        return
    text = job_logs(address, job_id)
    emit({"job_id": job_id, "logs": text}, as_json, text)


@finetune.command("list")
@address_option
@json_option
def list_cmd(address: str | None, as_json: bool) -> None:
    """Fine-tuning jobs on the cluster."""
    from lumos_ray.finetune import list_jobs

    jobs = [j.model_dump(mode="json") for j in list_jobs(address)]

    def human(rows: list[dict[str, Any]]) -> str:
        if not rows:
            return "No fine-tuning jobs."
        return "\n".join(
            f"{r['job_id']}  {r.get('name') or ''}  {r['status']}  "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r['start_time'] or 0))}"
            for r in rows
        )

    emit(jobs, as_json, human)


@finetune.command("eval")
@click.argument("tasks_file", type=click.Path(dir_okay=False))
@click.option("--base-url", required=True, help="OpenAI-compatible endpoint (gateway or vLLM).")
@click.option(
    "--model", "models", multiple=True, required=True, help="Served model (repeat to compare)."
)
@click.option("--api-key-env", default=None, help="Environment variable holding the API key.")
@click.option("--concurrency", default=4, show_default=True, help="Requests in flight.")
@click.option("--timeout", "timeout_s", default=60.0, show_default=True, help="Per request, s.")
@json_option
def eval_cmd(
    tasks_file: str,
    base_url: str,
    models: tuple[str, ...],
    api_key_env: str | None,
    concurrency: int,
    timeout_s: float,
    as_json: bool,
) -> None:
    """Tool-call accuracy of served models on a task set (right tool, arguments valid
    against the schema and equal to the expected ones, right final answer)."""
    import asyncio
    import os

    from lumos_ray.finetune import evaluate_tool_calls, format_reports, load_tasks

    tasks = load_tasks(tasks_file)
    key = os.environ.get(api_key_env) if api_key_env else None
    reports = [
        asyncio.run(
            evaluate_tool_calls(
                base_url, m, tasks, api_key=key, concurrency=concurrency, timeout_s=timeout_s
            )
        )
        for m in models
    ]
    emit([r.to_dict() for r in reports], as_json, format_reports(reports))


@finetune.command("flywheel")
@click.argument("spec_file", type=click.Path(dir_okay=False))
@json_option
def flywheel_cmd(spec_file: str, as_json: bool) -> None:
    """Export runs -> LoRA job -> adapter hot-loaded by the running gateway -> base vs
    adapter tool-call accuracy on held-out tasks (SPEC_FILE: a FlywheelSpec in YAML)."""
    from lumos_ray import runtime
    from lumos_ray.finetune import load_flywheel_spec, parse_progress_line, run_flywheel

    spec = load_flywheel_spec(spec_file)
    bar = _Bar(enabled=not as_json)

    def sink(line: str) -> None:
        ev = parse_progress_line(line)
        if ev is not None:
            bar.update(ev)
        elif line.startswith("flywheel:") and not as_json:
            click.echo(line, err=True)

    embedded = spec.address is None
    if embedded:
        runtime.connect()
    try:
        res = run_flywheel(spec, log=sink)
    finally:
        if embedded:
            runtime.shutdown()

    def human(d: dict[str, Any]) -> str:
        stages = "  ".join(f"{k.removesuffix('_s')} {v:.1f}s" for k, v in d["stages"].items())
        return f"{d['table']}\nstages: {stages}"

    emit(res.model_dump(mode="json"), as_json, human)


@finetune.command("cancel")
@click.argument("job_id")
@address_option
@json_option
def cancel_cmd(job_id: str, address: str | None, as_json: bool) -> None:
    """Stop JOB_ID. Its checkpoints stay: submit the same job file again to resume."""
    from lumos_ray.finetune import cancel_job

    info = cancel_job(address, job_id)
    emit(info.model_dump(mode="json"), as_json, f"{job_id}: {info.status}")


def register(cli: click.Group) -> None:
    cli.add_command(finetune)
