"""Fine-tuning jobs on a cluster, through the one job launcher (``lumos_ray.runtime``).

A job runs :func:`lumos_ray.finetune._job_main.job_main` on the cluster with the spec
as its argument, so the client needs nothing but HTTP access to the Ray Jobs API and
can exit (or die) while training goes on. The job's result (:class:`FinetuneResult`
as JSON) or its error comes back through the launcher's result channel, never from a
log line. Progress is for people: ``LUMOS_PROGRESS`` lines in the job's log, parsed
for the progress bar and ``status``.

Jobs belong to a tenant (``tenant=``, else ``LUMOS_TENANT``): the launcher records it
at submit and acts only on that tenant's jobs (see :mod:`lumos_ray.runtime._jobs`);
here a job of another kind is also NotFoundError, worded like an id that does not exist.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from lumos_ray.errors import ConnectionFailedError, NotFoundError
from lumos_ray.finetune._spec import FinetuneJobSpec
from lumos_ray.finetune._telemetry import parse_progress_line
from lumos_ray.runtime import JobInfo, JobLauncher

__all__ = [
    "KIND",
    "FinetuneJobInfo",
    "cancel_job",
    "follow_job",
    "get_job",
    "job_logs",
    "list_jobs",
    "make_client",
    "make_client_or_none",
    "submit_job",
]

KIND = "finetune"
_TARGET = "lumos_ray.finetune._job_main:job_main"


class FinetuneJobInfo(BaseModel):
    job_id: str
    name: str | None = None
    status: str
    message: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    progress: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    result_note: str | None = None


def make_client(address: str | None, *, tenant: str | None = None) -> JobLauncher:
    """The launcher for ``address``'s Jobs API, acting for ``tenant`` (default
    ``LUMOS_TENANT``); ConnectionFailedError with the fix."""
    return JobLauncher(address, tenant=tenant)


def make_client_or_none(address: str, *, tenant: str | None = None) -> JobLauncher | None:
    """A launcher if the Jobs API answers at ``address`` now, else None (for polling)."""
    try:
        return JobLauncher(address, connect_timeout_s=10, tenant=tenant)
    except ConnectionFailedError:
        return None


def _own(launcher: JobLauncher, job_id: str) -> JobInfo:
    """The job's info if it is a fine-tuning job of the launcher's tenant (the launcher
    checks the tenant); NotFoundError otherwise, worded like an id that does not exist."""
    info = launcher.info(job_id)
    if info.kind != KIND:
        raise NotFoundError(
            f"No job {job_id!r} on the cluster at {launcher.address}.",
            fix=f"List the jobs there with `lumos jobs list --address {launcher.address}`.",
            job_id=job_id,
        )
    return info


def submit_job(spec: FinetuneJobSpec, address: str | None, *, tenant: str | None = None) -> str:
    """Submit; returns the job id at once (training goes on without the client). The
    job belongs to ``tenant`` (default: ``LUMOS_TENANT``) and runs as that tenant."""
    import uuid

    from lumos_ray.finetune._runner import preflight

    spec = spec.resolve_paths()
    preflight(spec)
    return make_client(address, tenant=tenant).submit(
        _TARGET,
        {"spec": spec.model_dump(mode="json")},
        kind=KIND,
        name=spec.name,
        job_id=f"lumos-ft-{spec.name}-{uuid.uuid4().hex[:8]}",
    )


def _progress(logs: str) -> dict[str, Any] | None:
    progress: dict[str, Any] | None = None
    for line in logs.splitlines():
        p = parse_progress_line(line)
        if p is None:
            continue
        if p.get("event") == "step" or progress is None:
            progress = {**(progress or {}), **p}
        elif p.get("event") == "eval":
            progress = {**progress, "eval_loss": p.get("eval_loss")}
    return progress


def _as_ft(info: JobInfo, progress: dict[str, Any] | None = None) -> FinetuneJobInfo:
    return FinetuneJobInfo(
        job_id=info.job_id,
        name=info.name,
        status=info.status,
        message=info.message,
        start_time=info.start_time,
        end_time=info.end_time,
        progress=progress,
        result=info.result if isinstance(info.result, dict) else None,
        error=info.error,
        result_note=info.result_note,
    )


def get_job(address: str | None, job_id: str, *, tenant: str | None = None) -> FinetuneJobInfo:
    launcher = make_client(address, tenant=tenant)
    info = _own(launcher, job_id)
    return _as_ft(info, _progress(launcher.logs(job_id)))


def list_jobs(address: str | None, *, tenant: str | None = None) -> list[FinetuneJobInfo]:
    """The tenant's fine-tuning jobs on the cluster (other Ray jobs and other tenants'
    jobs are left out), oldest first."""
    return [_as_ft(i) for i in make_client(address, tenant=tenant).list_jobs(kind=KIND)]


def job_logs(address: str | None, job_id: str, *, tenant: str | None = None) -> str:
    launcher = make_client(address, tenant=tenant)
    _own(launcher, job_id)
    return launcher.logs(job_id)


def cancel_job(
    address: str | None, job_id: str, *, wait_s: float = 30.0, tenant: str | None = None
) -> FinetuneJobInfo:
    """Stop the job (its trainer and workers die with the driver); its checkpoints stay,
    so submitting the same spec again resumes."""
    launcher = make_client(address, tenant=tenant)
    _own(launcher, job_id)
    info = launcher.stop(job_id, wait_s=wait_s)
    return _as_ft(info, _progress(launcher.logs(job_id)))


def follow_job(
    address: str | None,
    job_id: str,
    *,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    on_line: Callable[[str], None] | None = None,
    poll_s: float = 1.0,
    timeout_s: float | None = None,
    tenant: str | None = None,
) -> FinetuneJobInfo:
    """Follow the job's log until it ends, calling back for each new progress event /
    other line; returns its result. Raises the job's own LumosError if it failed."""

    def dispatch(line: str) -> None:
        p = parse_progress_line(line)
        if p is not None and on_progress:
            on_progress(p)
        elif p is None and on_line:
            on_line(line)

    launcher = make_client(address, tenant=tenant)
    _own(launcher, job_id)
    info = launcher.follow(job_id, on_line=dispatch, poll_s=poll_s, timeout_s=timeout_s)
    return _as_ft(info)
