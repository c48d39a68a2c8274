"""The flywheel's spec, the job it submits, and its workflow form (no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from lumos_ray.finetune import FlywheelSpec, flywheel_workflow, load_flywheel_spec
from lumos_ray.finetune._flywheel import job_spec, stage_export


def test_yaml_spec_resolves_paths_next_to_the_file(tmp_path: Path) -> None:
    y = tmp_path / "fw.yaml"
    y.write_text(
        "name: calc-v1\nbase_model: models/tiny\ngateway_url: http://127.0.0.1:8000/v1\n"
        "tasks_path: tasks.jsonl\ndataset_path: out/data.jsonl\n"
        "export: {workflow: calc, min_score: 0.5}\n"
        "job: {training: {max_steps: 5}}\n"
    )
    spec = load_flywheel_spec(y)
    assert spec.tasks_path == str(tmp_path / "tasks.jsonl")
    assert spec.base_model == str(tmp_path / "models/tiny")
    assert spec.export == {"workflow": "calc", "min_score": 0.5}


def test_job_registers_the_adapter_under_the_flywheel_name(tmp_path: Path) -> None:
    spec = FlywheelSpec(
        name="calc-v1",
        base_model=str(tmp_path),
        gateway_url="http://127.0.0.1:1/v1",
        tasks_path="t.jsonl",
        dataset_path=str(tmp_path / "d.jsonl"),
        job={"output": {"registry_dir": str(tmp_path / "reg"), "adapter_name": "other"}},
    )
    job = job_spec(spec)
    assert job.name == "calc-v1" and job.dataset.format == "chat"
    assert job.output.register_adapter and job.output.adapter_name == "calc-v1"
    assert job.output.registry_dir == str(tmp_path / "reg")
    with pytest.raises(ValidationError):
        FlywheelSpec.model_validate({**spec.model_dump(), "name": "bad name!"})


def test_export_stage_with_no_matching_runs_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lumos_ray.errors import DatasetError

    monkeypatch.setenv("LUMOS_STORE_URL", f"sqlite:///{tmp_path}/empty.db")
    spec = FlywheelSpec(
        name="calc-v1",
        base_model=str(tmp_path),
        gateway_url="http://127.0.0.1:1/v1",
        tasks_path="t.jsonl",
        dataset_path=str(tmp_path / "d.jsonl"),
    )
    with pytest.raises(DatasetError, match="found no rows"):
        stage_export(spec.model_dump())


def test_the_flywheel_is_a_workflow_that_stores_as_data() -> None:
    from lumos_ray.workflows._serialize import definition_version, workflow_to_data

    wf = flywheel_workflow()
    body = workflow_to_data(wf)
    assert [s["id"] for s in body["steps"]] == ["export", "train", "serve", "eval"]
    assert body["steps"][1]["function"] == "lumos_ray.finetune._flywheel:stage_train"
    assert definition_version(body)
