"""`lumos jobs ...` and the Ray-job side of `lumos submit`, on the one job launcher
(``lumos_ray.runtime.JobLauncher``) that fine-tuning and federated simulation use too.

A submitted workflow job runs ``lumos_ray.workflows._submitted.run_workflow_job`` on
the cluster (the launcher's entrypoint imports it by path).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from lumos_ray.cli._common import emit, json_option

__all__ = ["register", "submit_workflow_job", "wait_job"]

KIND = "workflow"


#: --address for job commands: the Ray dashboard (Jobs API) of the cluster.
def _jobs_address_option(fn: Any) -> Any:
    return click.option(
        "--address",
        required=True,
        envvar="LUMOS_JOBS_ADDRESS",
        help="Ray dashboard/Jobs address, e.g. http://127.0.0.1:8265 (or LUMOS_JOBS_ADDRESS).",
    )(fn)


def submit_workflow_job(address: str, workflow_file: str, input_json: str | None) -> str:
    """Upload the workflow's directory and run the workflow there as a Ray job."""
    from lumos_ray.runtime import JobLauncher

    path = Path(workflow_file).resolve()
    return JobLauncher(address).submit(
        "lumos_ray.workflows._submitted:run_workflow_job",
        {"workflow": path.name, "input_json": input_json},
        kind=KIND,
        name=path.name,
        working_dir=str(path.parent),
        excludes=[".lumos", ".venv", "__pycache__", ".git"],
        env={"LUMOS_HOME": os.environ.get("LUMOS_CLUSTER_HOME", "~/.lumos")},
        inherit_env=False,
    )


def wait_job(address: str, job_id: str, timeout_s: float = 3600) -> dict[str, Any]:
    """Follow the job to its end: status, the run it returned, its log."""
    from lumos_ray.runtime import JobLauncher

    launcher = JobLauncher(address)
    info = launcher.follow(job_id, timeout_s=timeout_s, raise_on_failure=False)
    out: dict[str, Any] = {"status": info.status, "result": info.result}
    if info.error:
        out["error"] = info.error
    if info.result_note:
        out["result_note"] = info.result_note
    out["logs"] = launcher.logs(job_id)
    return out


def _info_text(d: dict[str, Any]) -> str:
    lines = [f"{d['job_id']}  {d.get('kind') or ''}  {d.get('name') or ''}  {d['status']}"]
    if d.get("message"):
        lines.append(f"  {d['message']}")
    if d.get("error"):
        lines.append(f"  error: {d['error'].get('message')}")
    if d.get("result") is not None:
        lines.append(f"  result: {json.dumps(d['result'], default=str)[:2000]}")
    if d.get("result_note"):
        lines.append(f"  note: {d['result_note']}")
    return "\n".join(lines)


@click.group("jobs")
def jobs() -> None:
    """Ray jobs submitted by lumos (workflows, fine-tuning, federated simulations)."""


@jobs.command("status")
@click.argument("job_id")
@_jobs_address_option
@json_option
def jobs_status(job_id: str, address: str, as_json: bool) -> None:
    """Show a job's status, and its result or error once it ended."""
    from lumos_ray.runtime import JobLauncher

    info = JobLauncher(address).info(job_id)
    emit(info.model_dump(mode="json"), as_json, _info_text)


@jobs.command("logs")
@click.argument("job_id")
@_jobs_address_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends.")
@json_option
def jobs_logs(job_id: str, address: str, follow: bool, as_json: bool) -> None:
    """Print a job's logs."""
    from lumos_ray.runtime import JobLauncher

    launcher = JobLauncher(address)
    if follow and not as_json:
        launcher.follow(job_id, on_line=click.echo, raise_on_failure=False)
        return
    launcher.info(job_id)  # unknown id: a clear error, not an empty log
    logs = launcher.logs(job_id)
    emit({"job_id": job_id, "logs": logs}, as_json, logs)


@jobs.command("list")
@_jobs_address_option
@click.option(
    "--kind", default=None, help="Only jobs of this kind (workflow, finetune, federated)."
)
@json_option
def jobs_list(address: str, kind: str | None, as_json: bool) -> None:
    """lumos jobs on the cluster, oldest first."""
    from lumos_ray.runtime import JobLauncher

    rows = [j.model_dump(mode="json") for j in JobLauncher(address).list_jobs(kind=kind)]
    emit(rows, as_json, lambda r: "\n".join(_info_text(x) for x in r) or "No lumos jobs.")


@jobs.command("stop")
@click.argument("job_id")
@_jobs_address_option
@click.option("--wait", "wait_s", type=float, default=60.0, show_default=True,
              help="Seconds to wait for the job to end.")  # fmt: skip
@json_option
def jobs_stop(job_id: str, address: str, wait_s: float, as_json: bool) -> None:
    """Stop JOB_ID (its driver and everything it started on the cluster)."""
    from lumos_ray.runtime import JobLauncher

    info = JobLauncher(address).stop(job_id, wait_s=wait_s)
    emit(info.model_dump(mode="json"), as_json, f"{job_id}: {info.status}")


def register(cli: click.Group) -> None:
    cli.add_command(jobs)
