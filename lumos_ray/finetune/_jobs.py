"""Ray Jobs API client side: submit a job spec, follow it, list, cancel.

A job is ``python -m lumos_ray.finetune._job_main spec.json`` with the spec shipped
in the job's ``working_dir``, so the client needs nothing but HTTP access to the
cluster's dashboard and can exit (or die) while training goes on. Job logs carry
``LUMOS_PROGRESS`` / ``LUMOS_RESULT`` / ``LUMOS_ERROR`` lines; everything the CLI
shows is parsed from them, so any client can attach later and see the same.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from lumos_ray.errors import ConnectionFailedError, JobError, LumosError, NotFoundError
from lumos_ray.finetune._spec import FinetuneJobSpec
from lumos_ray.finetune._telemetry import parse_progress_line
from lumos_ray.runtime import jobs_auth_headers

__all__ = [
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

KIND = "lumos-finetune"
RESULT_PREFIX = "LUMOS_RESULT "
ERROR_PREFIX = "LUMOS_ERROR "
_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


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


def _dashboard_address(address: str | None) -> str | None:
    if address in (None, "", "local"):
        raise ConnectionFailedError(
            "`lumos finetune` job commands need a running cluster with the Ray Jobs API",
            fix="Pass --address http://HEAD:8265 (the Ray dashboard) or `auto` for a "
            "cluster started with `ray start --head` on this machine; or run the job "
            "in-process with `lumos finetune submit JOB.yaml` and no --address.",
        )
    assert address is not None
    if address.startswith("ray://"):
        raise ConnectionFailedError(
            f"{address} is a Ray Client address; Ray Jobs use the dashboard address.",
            fix="Pass --address http://HOST:8265 (the head node's dashboard port).",
        )
    if address == "auto" or "://" in address:
        return address
    return f"http://{address}"


def make_client(address: str | None) -> Any:
    from ray.job_submission import JobSubmissionClient

    addr = _dashboard_address(address)
    try:
        return JobSubmissionClient(addr, headers=jobs_auth_headers())
    except Exception as exc:
        raise ConnectionFailedError(
            f"Could not reach the Ray Jobs API at {addr!r}: {type(exc).__name__}: {exc}"
        ) from None


def make_client_or_none(address: str) -> Any | None:
    """A client if the Jobs API answers at ``address`` now, else None (for polling)."""
    try:
        return make_client(address)
    except ConnectionFailedError:
        return None


def _entry_python(address: str) -> str:
    """The interpreter for the job: ours when the cluster is on this machine (it has
    the same environment), plain `python` on a remote cluster's PATH otherwise."""
    if override := os.environ.get("LUMOS_JOB_PYTHON"):
        return override
    local = ("127.0.0.1", "localhost", "auto")
    return sys.executable if any(h in address for h in local) else "python"


def submit_job(spec: FinetuneJobSpec, address: str | None) -> str:
    """Submit; returns the job id at once (training goes on without the client)."""
    from lumos_ray.finetune._runner import preflight

    spec = spec.resolve_paths()
    preflight(spec)
    client = make_client(address)
    job_id = f"lumos-ft-{spec.name}-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="lumos-ft-submit-") as wd:
        (Path(wd) / "spec.json").write_text(spec.model_dump_json(indent=2))
        env = {
            k: v
            for k, v in os.environ.items()
            if k.startswith("LUMOS_") and k not in ("LUMOS_RAY_ADDRESS",)
        }
        env["LUMOS_HOME"] = str(Path(os.environ.get("LUMOS_HOME", ".lumos")).resolve())
        try:
            client.submit_job(
                entrypoint=f"{_entry_python(str(address))} -m lumos_ray.finetune._job_main "
                "spec.json",
                submission_id=job_id,
                runtime_env={"working_dir": wd, "env_vars": env},
                metadata={"lumos_kind": KIND, "lumos_job_name": spec.name},
            )
        except Exception as exc:
            raise JobError(f"submitting {spec.name!r} failed: {exc}") from None
    return job_id


def _scan_logs(logs: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict | None]:
    progress = result = error = None
    for line in logs.splitlines():
        if (p := parse_progress_line(line)) is not None:
            if p.get("event") == "step" or progress is None:
                progress = {**(progress or {}), **p}
            elif p.get("event") == "eval":
                progress = {**progress, "eval_loss": p.get("eval_loss")}
        elif RESULT_PREFIX in line:
            result = _json_after(line, RESULT_PREFIX)
        elif ERROR_PREFIX in line:
            error = _json_after(line, ERROR_PREFIX)
    return progress, result, error


def _json_after(line: str, prefix: str) -> dict[str, Any] | None:
    try:
        data = json.loads(line[line.index(prefix) + len(prefix) :])
    except (ValueError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _info(client: Any, job_id: str, details: Any | None = None) -> FinetuneJobInfo:
    try:
        d = details or client.get_job_info(job_id)
    except RuntimeError as exc:
        if "404" in str(exc) or "does not exist" in str(exc):
            raise NotFoundError(f"no job {job_id!r} on this cluster") from None
        raise
    meta = getattr(d, "metadata", None) or {}
    progress, result, error = _scan_logs(client.get_job_logs(job_id))
    return FinetuneJobInfo(
        job_id=job_id,
        name=meta.get("lumos_job_name"),
        status=str(getattr(d.status, "value", d.status)),
        message=d.message,
        start_time=(d.start_time or 0) / 1000 or None,
        end_time=(d.end_time or 0) / 1000 or None,
        progress=progress,
        result=result,
        error=error,
    )


def get_job(address: str | None, job_id: str) -> FinetuneJobInfo:
    return _info(make_client(address), job_id)


def list_jobs(address: str | None) -> list[FinetuneJobInfo]:
    """Fine-tuning jobs on the cluster (other Ray jobs are left out), oldest first."""
    client = make_client(address)
    out = []
    for d in client.list_jobs():
        meta = d.metadata or {}
        if meta.get("lumos_kind") != KIND or not d.submission_id:
            continue
        out.append(
            FinetuneJobInfo(
                job_id=d.submission_id,
                name=meta.get("lumos_job_name"),
                status=str(getattr(d.status, "value", d.status)),
                message=d.message,
                start_time=(d.start_time or 0) / 1000 or None,
                end_time=(d.end_time or 0) / 1000 or None,
            )
        )
    return sorted(out, key=lambda j: j.start_time or 0)


def job_logs(address: str | None, job_id: str) -> str:
    client = make_client(address)
    _info(client, job_id)
    return str(client.get_job_logs(job_id))


def cancel_job(address: str | None, job_id: str, *, wait_s: float = 30.0) -> FinetuneJobInfo:
    """Stop the job (its trainer and workers die with the driver); its checkpoints stay,
    so submitting the same spec again resumes."""
    client = make_client(address)
    _info(client, job_id)
    client.stop_job(job_id)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        status = str(getattr(client.get_job_status(job_id), "value", ""))
        if status in _TERMINAL:
            break
        time.sleep(0.5)
    return _info(client, job_id)


def follow_job(
    address: str | None,
    job_id: str,
    *,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    on_line: Callable[[str], None] | None = None,
    poll_s: float = 1.0,
    timeout_s: float | None = None,
) -> FinetuneJobInfo:
    """Poll the job's log until it ends, calling back for each new line / progress event.
    Raises the job's own LumosError (or JobError) if it failed."""
    client = make_client(address)
    seen = 0
    deadline = time.monotonic() + timeout_s if timeout_s else None
    while True:
        status = str(getattr(client.get_job_status(job_id), "value", ""))
        logs = str(client.get_job_logs(job_id))
        lines = logs.splitlines()
        for line in lines[seen:]:
            p = parse_progress_line(line)
            if p is not None and on_progress:
                on_progress(p)
            elif p is None and on_line:
                on_line(line)
        seen = len(lines)
        if status in _TERMINAL:
            break
        if deadline and time.monotonic() > deadline:
            raise JobError(f"job {job_id} still {status} after {timeout_s:g} s")
        time.sleep(poll_s)
    info = _info(client, job_id)
    if info.status != "SUCCEEDED":
        if info.error:
            raise _error_from_dict(info.error)
        raise JobError(
            f"job {job_id} {info.status}: {info.message or ''}".strip(),
            job_id=job_id,
        )
    return info


def _error_from_dict(data: dict[str, Any]) -> LumosError:
    from lumos_ray import errors

    cls = getattr(errors, str(data.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, LumosError)):
        cls = JobError
    return cls(str(data.get("message", "job failed")), fix=data.get("fix"))
