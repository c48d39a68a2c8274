"""One job launcher: submit a Ray job, follow it, read the result it wrote, stop it.

Used by fine-tuning, federated simulation and ``lumos submit``. A lumos job is a call
of a Python function by import path (``module:function`` with JSON keyword
arguments), run on the cluster by :mod:`lumos_ray.runtime._job_entry` as the job's
driver. The client needs only HTTP access to the Ray Jobs API (``JobSubmissionClient``,
public) and may exit or die while the job goes on.

Where the result travels (the choice, and its limits)
-----------------------------------------------------
The function's return value (or its error, as ``LumosError.to_dict()``) is written by
the job as one JSON file, atomically (temp file + rename), at a path the submitter
chose and passed in the job's environment (``LUMOS_JOB_RESULT_PATH``): under
``results_dir`` (default ``$LUMOS_HOME/jobs/results``), named by the job id. Nothing is
parsed out of log lines; logs are for people.

* Same machine (the embedded cluster, ``ray start --head`` on this host): works as is.
* Multi-node clusters: the job's driver runs on the head node, so ``results_dir`` must
  be a location both sides see (a shared filesystem path, given by
  ``LUMOS_JOB_RESULTS_DIR``). Where there is none, :class:`ResultStore` is the seam: a
  store-backed implementation (the control-plane store, PostgreSQL for clusters)
  replaces :class:`FileResultStore` on the submitter side, keyed by the same job id;
  the job side (``_job_entry``, which today only writes a file) then needs the
  matching writer. Until then a submitter that cannot see the file gets
  ``result=None`` and a note saying why.

Jobs belong to a tenant
-----------------------
A launcher acts for one tenant (``tenant=``, else ``LUMOS_TENANT``): ``submit`` records
it in the job's metadata (``lumos_tenant``) and runs the job as that tenant, and every
other call acts only on that tenant's jobs. Another tenant's job id is NotFoundError
worded exactly like an id that does not exist (no existence oracle), and ``list_jobs``
leaves such jobs out. The filter lives here, in the one launcher, so fine-tuning,
federated simulation and ``lumos submit`` cannot forget it. Jobs submitted before jobs
carried a tenant count as the ``default`` tenant's.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, Field

from lumos_ray._files import private_dir, write_private_text
from lumos_ray.errors import ConnectionFailedError, JobError, LumosError, NotFoundError
from lumos_ray.runtime._cluster import jobs_auth_headers

__all__ = [
    "ENV_CALL",
    "ENV_RESULT_PATH",
    "FileResultStore",
    "JobInfo",
    "JobLauncher",
    "ResultStore",
    "error_from_dict",
    "jobs_address",
]

#: Environment of a lumos job: what to call, and where to write what it returned.
ENV_CALL = "LUMOS_JOB_CALL"
ENV_RESULT_PATH = "LUMOS_JOB_RESULT_PATH"
ENV_JOB_ID = "LUMOS_JOB_ID"
#: The job metadata key holding the submitting tenant.
TENANT_KEY = "lumos_tenant"
#: Tenant of jobs submitted before jobs carried one.
LEGACY_TENANT = "default"
#: The submitter's trace context (W3C), so the job's spans join the submitter's trace.
ENV_TRACEPARENT = "TRACEPARENT"
ENV_TRACESTATE = "TRACESTATE"

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
#: Bounds: the call's JSON travels in an environment variable (Linux caps one at 128 KiB).
MAX_CALL_BYTES = 100_000
#: A result file larger than this is refused on read (it is metadata, not data).
MAX_RESULT_BYTES = 16 * 1024 * 1024
CONNECT_TIMEOUT_S = 30.0
STOP_WAIT_S = 60.0


class JobInfo(BaseModel):
    """A lumos job as the Jobs API and its result file describe it."""

    job_id: str
    kind: str | None = None
    name: str | None = None
    status: str
    message: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    #: What the job's function returned (None until it finished, or unreadable here).
    result: Any = None
    #: The job's own error (``LumosError.to_dict()``) when it failed.
    error: dict[str, Any] | None = None
    result_note: str | None = None


class ResultStore(Protocol):
    """Where a job's result lives, keyed by job id (seam for a store-backed one)."""

    def location(self, job_id: str) -> str:
        """What the job is told (``LUMOS_JOB_RESULT_PATH``)."""
        ...

    def read(self, job_id: str) -> dict[str, Any] | None:
        """The envelope the job wrote (``{"ok": ..., "result"/"error": ...}``), or None."""
        ...


class FileResultStore:
    """Result files in a directory both the submitter and the job's driver can see."""

    def __init__(self, directory: str | Path | None = None) -> None:
        chosen = directory or os.environ.get("LUMOS_JOB_RESULTS_DIR")
        default = Path(os.environ.get("LUMOS_HOME") or ".lumos") / "jobs" / "results"
        self.directory = Path(chosen or default).expanduser().resolve()
        #: lumos's own folder is tightened to 0700; a folder the user chose (a shared
        #: filesystem path) keeps its mode, only the parts lumos creates are 0700.
        self._own_directory = not chosen

    def location(self, job_id: str) -> str:
        private_dir(self.directory, tighten_existing=self._own_directory)
        return str(self.directory / f"{job_id}.json")

    def read(self, job_id: str) -> dict[str, Any] | None:
        path = self.directory / f"{job_id}.json"
        try:
            if path.stat().st_size > MAX_RESULT_BYTES:
                raise JobError(f"result file {path} is larger than {MAX_RESULT_BYTES} bytes")
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None


def write_result_file(path: str, envelope: Mapping[str, Any]) -> None:
    """Job side: write atomically, so a reader never sees half a file, and ``0600``
    (a result holds what the job returned: run outputs, metrics, paths)."""
    target = Path(path)
    private_dir(target.parent, tighten_existing=False)
    write_private_text(target, json.dumps(dict(envelope), default=str))


def jobs_address(address: str | None) -> str:
    """The Jobs API URL for ``address`` (``HOST:PORT`` gets ``http://``)."""
    if address in (None, "", "local"):
        raise ConnectionFailedError(
            "Ray job commands need a running cluster with the Ray Jobs API.",
            fix="Pass --address http://HEAD:8265 (the Ray dashboard of a cluster started "
            "with `ray start --head`), or set LUMOS_JOBS_ADDRESS.",
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


def _bounded(fn: Callable[[], Any], timeout_s: float, what: str, fix: str) -> Any:
    """``fn()`` in a daemon thread, given up after ``timeout_s`` (an HTTP call to an
    address that drops packets would otherwise hang the command)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True, name="lumos-jobs-call")
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise ConnectionFailedError(f"{what}: no answer within {timeout_s:g} s", fix=fix)
    if "error" in box:
        raise box["error"]
    return box.get("value")


def error_from_dict(data: Mapping[str, Any], job_id: str | None = None) -> LumosError:
    """The job's LumosError, rebuilt on this side (its class when it is one of ours)."""
    from lumos_ray import errors

    cls = getattr(errors, str(data.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, LumosError)):
        cls = JobError
    details = dict(data.get("details") or {})
    if job_id:
        details.setdefault("job_id", job_id)
    return cls(str(data.get("message") or "job failed"), fix=data.get("fix"), **details)


def _status(value: Any) -> str:
    return str(getattr(value, "value", value)).split(".")[-1]


class JobLauncher:
    """Client of one cluster's Ray Jobs API for lumos jobs."""

    def __init__(
        self,
        address: str | None,
        *,
        results: ResultStore | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        tenant: str | None = None,
    ) -> None:
        from lumos_ray.config import LumosSettings

        self.address = jobs_address(address)
        #: The tenant this launcher acts for: it sees and touches only its jobs.
        self.tenant = tenant or LumosSettings.from_env().tenant_id
        self.results: ResultStore = results or FileResultStore()
        self._timeout_s = connect_timeout_s
        from ray.job_submission import JobSubmissionClient

        fix = (
            f"Check that a Ray cluster with its dashboard runs at {self.address} (`ray start "
            "--head` starts one on port 8265) and that this machine can reach it."
        )
        try:
            self.client = _bounded(
                lambda: JobSubmissionClient(self.address, headers=jobs_auth_headers()),
                connect_timeout_s,
                f"Could not reach the Ray Jobs API at {self.address}",
                fix,
            )
        except ConnectionFailedError:
            raise
        except Exception as exc:
            raise ConnectionFailedError(
                f"Could not reach the Ray Jobs API at {self.address}: {type(exc).__name__}: {exc}",
                fix=fix,
            ) from None

    # -- calls to the Jobs API, each bounded ------------------------------------------
    def _call(self, what: str, fn: Callable[[], Any], job_id: str | None = None) -> Any:
        try:
            return _bounded(
                fn,
                self._timeout_s,
                f"Ray Jobs API at {self.address} ({what})",
                "Retry; if it persists, check the cluster's dashboard process.",
            )
        except LumosError:
            raise
        except Exception as exc:
            text = str(exc)
            if job_id and ("404" in text or "does not exist" in text or "not found" in text):
                raise NotFoundError(
                    f"No job {job_id!r} on the cluster at {self.address}.",
                    fix=f"List the jobs there with `lumos jobs list --address {self.address}`.",
                    job_id=job_id,
                ) from None
            raise JobError(
                f"Ray Jobs API at {self.address} failed ({what}): {type(exc).__name__}: {text}"
            ) from None

    # -- submit -----------------------------------------------------------------------
    def submit(
        self,
        target: str,
        kwargs: Mapping[str, Any] | None = None,
        *,
        kind: str,
        name: str,
        job_id: str | None = None,
        working_dir: str | None = None,
        excludes: list[str] | None = None,
        env: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        python: str | None = None,
        inherit_env: bool = True,
    ) -> str:
        """Run ``target`` (``module:function``) with ``kwargs`` as a Ray job; returns the
        job id at once. The job's environment gets this process's ``LUMOS_*`` settings,
        the result location and the current trace context. ``inherit_env=False`` sends
        only ``env`` (a job for another machine, whose settings are its own)."""
        from lumos_ray import tracing

        call = json.dumps({"target": target, "kwargs": dict(kwargs or {})}, default=str)
        if len(call.encode()) > MAX_CALL_BYTES:
            raise JobError(
                f"The job's arguments are {len(call.encode())} bytes; at most "
                f"{MAX_CALL_BYTES} travel with a job.",
                fix="Pass large inputs as files in the job's working directory instead.",
            )
        job_id = job_id or f"lumos-{kind}-{uuid.uuid4().hex[:12]}"
        job_env = {
            k: v
            for k, v in os.environ.items()
            if inherit_env
            and k.startswith("LUMOS_")
            and k not in ("LUMOS_RAY_ADDRESS", "LUMOS_JOBS_ADDRESS")
        }
        if "LUMOS_HOME" in job_env:
            job_env["LUMOS_HOME"] = str(Path(job_env["LUMOS_HOME"]).expanduser().resolve())
        job_env.update(env or {})
        job_env["LUMOS_TENANT"] = self.tenant  # the job runs as its submitter's tenant
        job_env[ENV_CALL] = call
        job_env[ENV_JOB_ID] = job_id
        job_env[ENV_RESULT_PATH] = self.results.location(job_id)
        carrier = tracing.inject()
        if "traceparent" in carrier:
            job_env[ENV_TRACEPARENT] = carrier["traceparent"]
            if "tracestate" in carrier:
                job_env[ENV_TRACESTATE] = carrier["tracestate"]
        runtime_env: dict[str, Any] = {"env_vars": job_env}
        if working_dir:
            runtime_env["working_dir"] = working_dir
            if excludes:
                runtime_env["excludes"] = excludes
        entry = [python or self._python(), "-m", "lumos_ray.runtime._job_entry"]
        meta = {**(metadata or {}), "lumos_kind": kind, "lumos_job_name": name}
        meta[TENANT_KEY] = self.tenant
        self._call(
            "submit",
            lambda: self.client.submit_job(
                entrypoint=shlex.join(entry),
                submission_id=job_id,
                runtime_env=runtime_env,
                metadata=meta,
            ),
        )
        return job_id

    def _python(self) -> str:
        """The job's interpreter: ours when the cluster is on this machine (the same
        environment), plain ``python`` on a remote cluster's PATH otherwise."""
        if override := os.environ.get("LUMOS_JOB_PYTHON"):
            return override
        local = ("127.0.0.1", "localhost", "auto", "[::1]")
        return sys.executable if any(h in self.address for h in local) else "python"

    # -- read -------------------------------------------------------------------------
    def _not_found(self, job_id: str) -> NotFoundError:
        return NotFoundError(
            f"No job {job_id!r} on the cluster at {self.address}.",
            fix=f"List the jobs there with `lumos jobs list --address {self.address}`.",
            job_id=job_id,
        )

    def _owns(self, meta: Mapping[str, str]) -> bool:
        """A lumos job of this launcher's tenant (other Ray jobs are not ours either)."""
        return "lumos_kind" in meta and meta.get(TENANT_KEY, LEGACY_TENANT) == self.tenant

    def info(self, job_id: str) -> JobInfo:
        """The job's status, and its result or error once it ended. NotFoundError for
        an id that does not exist and for another tenant's job alike."""
        d = self._call("get info", lambda: self.client.get_job_info(job_id), job_id)
        meta = dict(getattr(d, "metadata", None) or {})
        if not self._owns(meta):
            raise self._not_found(job_id)
        status = _status(d.status)
        info = JobInfo(
            job_id=job_id,
            kind=meta.get("lumos_kind"),
            name=meta.get("lumos_job_name"),
            status=status,
            message=d.message,
            start_time=(d.start_time or 0) / 1000 or None,
            end_time=(d.end_time or 0) / 1000 or None,
            metadata=meta,
        )
        if status in TERMINAL:
            envelope = self.results.read(job_id)
            if envelope is None:
                if status == "SUCCEEDED":
                    info.result_note = (
                        "the job's result file is not readable here (a cluster on another "
                        "machine needs LUMOS_JOB_RESULTS_DIR on a shared filesystem)"
                    )
            elif envelope.get("ok"):
                info.result = envelope.get("result")
            else:
                info.error = envelope.get("error") or {"message": "job failed"}
        return info

    def status(self, job_id: str) -> str:
        self.info(job_id)  # ownership
        return self._status_of(job_id)

    def logs(self, job_id: str) -> str:
        self.info(job_id)  # ownership
        return self._logs_of(job_id)

    # Unchecked reads, for loops that checked ownership once before they started.
    def _status_of(self, job_id: str) -> str:
        return _status(self._call("status", lambda: self.client.get_job_status(job_id), job_id))

    def _logs_of(self, job_id: str) -> str:
        return str(self._call("logs", lambda: self.client.get_job_logs(job_id), job_id))

    def list_jobs(self, kind: str | None = None) -> list[JobInfo]:
        """This tenant's lumos jobs on the cluster (of ``kind`` if given), oldest first."""
        out = []
        for d in self._call("list", self.client.list_jobs):
            meta = dict(d.metadata or {})
            if not d.submission_id or not self._owns(meta):
                continue
            if kind is not None and meta.get("lumos_kind") != kind:
                continue
            out.append(
                JobInfo(
                    job_id=d.submission_id,
                    kind=meta.get("lumos_kind"),
                    name=meta.get("lumos_job_name"),
                    status=_status(d.status),
                    message=d.message,
                    start_time=(d.start_time or 0) / 1000 or None,
                    end_time=(d.end_time or 0) / 1000 or None,
                    metadata=meta,
                )
            )
        return sorted(out, key=lambda j: j.start_time or 0)

    # -- follow / wait / stop ----------------------------------------------------------
    def follow(
        self,
        job_id: str,
        *,
        on_line: Callable[[str], None] | None = None,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
        raise_on_failure: bool = True,
    ) -> JobInfo:
        """Stream the job's new log lines to ``on_line`` until it ends; its result.

        Raises the job's own LumosError (or JobError) when it did not succeed (unless
        ``raise_on_failure`` is False), and JobError when ``timeout_s`` passes first
        (the job goes on: stop it with :meth:`stop`)."""
        self.info(job_id)  # unknown or another tenant's id -> NotFoundError now
        seen = 0
        deadline = time.monotonic() + timeout_s if timeout_s else None
        while True:
            status = self._status_of(job_id)
            if on_line is not None:
                lines = self._logs_of(job_id).splitlines()
                for line in lines[seen:]:
                    on_line(line)
                seen = len(lines)
            if status in TERMINAL:
                break
            if deadline and time.monotonic() > deadline:
                raise JobError(
                    f"job {job_id} is still {status} after {timeout_s:g} s",
                    fix=f"Follow it later with `lumos jobs status {job_id} --address "
                    f"{self.address}`, or stop it with `lumos jobs stop {job_id}`.",
                    job_id=job_id,
                )
            time.sleep(poll_s)
        info = self.info(job_id)
        if raise_on_failure and info.status != "SUCCEEDED":
            if info.error:
                raise error_from_dict(info.error, job_id)
            raise JobError(
                f"job {job_id} {info.status}: {info.message or ''}".strip(), job_id=job_id
            )
        return info

    def stop(self, job_id: str, *, wait_s: float = STOP_WAIT_S) -> JobInfo:
        """Stop the job (its driver and the tasks/actors it started die with it) and
        wait, at most ``wait_s``, until Ray reports it ended."""
        info = self.info(job_id)
        if info.status in TERMINAL:
            return info
        self._call("stop", lambda: self.client.stop_job(job_id), job_id)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self._status_of(job_id) in TERMINAL:
                break
            time.sleep(0.5)
        return self.info(job_id)
