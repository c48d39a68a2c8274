"""Jobs belong to the tenant that submitted them: another tenant's job is
NotFoundError (worded like an id that does not exist) for get, logs, cancel and
follow, and list_jobs leaves it out -- for fine-tuning jobs and for any job of the one
launcher (``lumos submit`` workflows, federated simulations).

The Jobs API here is a stand-in (an in-memory JobSubmissionClient with the methods
the launcher calls, patched in where the real launcher imports it): a real one needs a
Ray cluster with its dashboard, which the unit tier never starts
(tests/integration/test_runtime_jobs.py checks the same filter on a real one). What
is checked is the launcher's and lumos_ray.finetune's filtering and the metadata they
submit."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lumos_ray.errors import NotFoundError
from lumos_ray.finetune import _jobs
from lumos_ray.finetune._spec import load_job_spec
from lumos_ray.runtime import JobLauncher
from lumos_ray.runtime._jobs import TENANT_KEY

REPO = Path(__file__).resolve().parents[2]
ADDR = "http://127.0.0.1:8265"


@dataclass
class _Job:
    submission_id: str
    metadata: dict[str, str]
    status: str = "RUNNING"
    message: str = ""
    start_time: int = 1000
    end_time: int | None = None
    runtime_env: dict[str, Any] = field(default_factory=dict)


class _StandInJobsApi:
    """The JobSubmissionClient methods the launcher uses, over a dict."""

    def __init__(self) -> None:
        self.jobs: dict[str, _Job] = {}

    def submit_job(self, *, entrypoint: str, submission_id: str, runtime_env: Any, metadata: Any):
        self.jobs[submission_id] = _Job(submission_id, dict(metadata), runtime_env=runtime_env)
        return submission_id

    def get_job_info(self, job_id: str) -> _Job:
        if job_id not in self.jobs:
            raise RuntimeError(f"Job {job_id} does not exist")
        return self.jobs[job_id]

    def get_job_status(self, job_id: str) -> str:
        return self.get_job_info(job_id).status

    def get_job_logs(self, job_id: str) -> str:
        self.get_job_info(job_id)
        return "training...\n"

    def list_jobs(self) -> list[_Job]:
        return list(self.jobs.values())

    def stop_job(self, job_id: str) -> bool:
        self.get_job_info(job_id).status = "STOPPED"
        return True


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> _StandInJobsApi:
    fake = _StandInJobsApi()
    monkeypatch.setattr("ray.job_submission.JobSubmissionClient", lambda *a, **k: fake)
    monkeypatch.setenv("LUMOS_JOB_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setattr("lumos_ray.finetune._runner.preflight", lambda spec: None)
    return fake


def test_submit_records_the_tenant_and_runs_the_job_as_it(api: _StandInJobsApi) -> None:
    spec = load_job_spec(REPO / "configs" / "finetune" / "lumos-tiny-lora.yaml")
    job_id = _jobs.submit_job(spec, ADDR, tenant="acme")
    job = api.jobs[job_id]
    assert job.metadata[TENANT_KEY] == "acme" and job.metadata["lumos_kind"] == "finetune"
    assert job.runtime_env["env_vars"]["LUMOS_TENANT"] == "acme"


def test_another_tenants_job_is_not_found_and_not_listed(api: _StandInJobsApi) -> None:
    spec = load_job_spec(REPO / "configs" / "finetune" / "lumos-tiny-lora.yaml")
    theirs = _jobs.submit_job(spec, ADDR, tenant="acme")
    mine = _jobs.submit_job(spec, ADDR, tenant="globex")
    assert _jobs.get_job(ADDR, theirs, tenant="acme").job_id == theirs
    calls = [
        lambda: _jobs.get_job(ADDR, theirs, tenant="globex"),
        lambda: _jobs.job_logs(ADDR, theirs, tenant="globex"),
        lambda: _jobs.cancel_job(ADDR, theirs, tenant="globex", wait_s=0),
        lambda: _jobs.follow_job(ADDR, theirs, tenant="globex"),
    ]
    for call in calls:
        with pytest.raises(NotFoundError) as theirs_err:
            call()
        with pytest.raises(NotFoundError) as unknown_err:
            _jobs.get_job(ADDR, "lumos-ft-never", tenant="globex")
        # The same words as for an id that does not exist (no existence leak).
        assert theirs_err.value.message.replace(theirs, "X") == unknown_err.value.message.replace(
            "lumos-ft-never", "X"
        )
    assert api.jobs[theirs].status == "RUNNING"  # globex's cancel did not stop it
    assert [j.job_id for j in _jobs.list_jobs(ADDR, tenant="globex")] == [mine]
    assert [j.job_id for j in _jobs.list_jobs(ADDR, tenant="acme")] == [theirs]


def test_jobs_from_before_tenants_belong_to_the_default_tenant(api: _StandInJobsApi) -> None:
    api.jobs["old"] = _Job("old", {"lumos_kind": "finetune", "lumos_job_name": "x"})
    assert [j.job_id for j in _jobs.list_jobs(ADDR, tenant="default")] == ["old"]
    with pytest.raises(NotFoundError):
        _jobs.get_job(ADDR, "old", tenant="acme")


def test_any_launcher_job_is_its_tenants_only(
    api: _StandInJobsApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LUMOS_TENANT", "acme")
    acme = JobLauncher(ADDR)  # the tenant comes from LUMOS_TENANT when not given
    assert acme.tenant == "acme"
    job = acme.submit("m:f", {}, kind="workflow", name="wf", metadata={TENANT_KEY: "globex"})
    # A caller's metadata cannot claim another tenant.
    assert api.jobs[job].metadata[TENANT_KEY] == "acme"
    assert api.jobs[job].runtime_env["env_vars"]["LUMOS_TENANT"] == "acme"
    globex = JobLauncher(ADDR, tenant="globex")
    for call in (globex.info, globex.status, globex.logs, globex.stop, globex.follow):
        with pytest.raises(NotFoundError):
            call(job)
    assert api.jobs[job].status == "RUNNING"
    assert globex.list_jobs() == [] and [j.job_id for j in acme.list_jobs()] == [job]
    # A Ray job that lumos did not submit is nobody's here.
    api.jobs["raw"] = _Job("raw", {})
    with pytest.raises(NotFoundError):
        acme.info("raw")
