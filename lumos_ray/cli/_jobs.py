"""Ray Jobs plumbing shared by `lumos submit` and `lumos jobs`."""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import Any

from lumos_ray.errors import ConnectionFailedError, JobError

__all__ = ["job_client", "submit_workflow_job", "wait_job"]

_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def _normalise(address: str) -> str:
    if address.startswith("ray://"):
        raise ConnectionFailedError(
            f"{address} is a Ray Client address; Ray Jobs use the dashboard address.",
            fix="Pass --address http://HOST:8265 (the head node's dashboard port).",
        )
    return address if "://" in address else f"http://{address}"


def job_client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    from lumos_ray.runtime import jobs_auth_headers

    try:
        return JobSubmissionClient(_normalise(address), headers=jobs_auth_headers())
    except Exception as exc:
        raise ConnectionFailedError(f"Cannot reach the Ray Jobs API at {address}: {exc}") from None


def submit_workflow_job(address: str, workflow_file: str, input_json: str | None) -> str:
    """Upload the workflow's directory and run it there with `lumos run`."""
    path = Path(workflow_file).resolve()
    cmd = ["python", "-m", "lumos_ray", "run", path.name, "--address", "auto", "--json"]
    if input_json is not None:
        cmd += ["--input", input_json]
    client = job_client(address)
    try:
        return client.submit_job(
            entrypoint=shlex.join(cmd),
            runtime_env={
                "working_dir": str(path.parent),
                "excludes": [".lumos", ".venv", "__pycache__", ".git"],
                "env_vars": {"LUMOS_HOME": os.environ.get("LUMOS_CLUSTER_HOME", "~/.lumos")},
            },
            metadata={"lumos": "workflow", "workflow": path.name},
        )
    except Exception as exc:
        raise JobError(f"Job submission to {address} failed: {exc}") from None


def wait_job(address: str, job_id: str, timeout_s: float = 3600) -> dict[str, Any]:
    client = job_client(address)
    deadline = time.monotonic() + timeout_s
    while True:
        status = str(client.get_job_status(job_id))
        if status.split(".")[-1] in _TERMINAL:
            break
        if time.monotonic() > deadline:
            raise JobError(f"job {job_id} did not finish within {timeout_s} s")
        time.sleep(1)
    return {"status": status.split(".")[-1], "logs": client.get_job_logs(job_id)}
