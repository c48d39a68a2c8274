"""Fine-tuning: job spec, dataset validation, tokenization, preflight errors, CLI.

No Ray here: everything that can fail before a worker starts is checked in-process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lumos_ray.errors import ConfigError, DatasetError, LumosError
from lumos_ray.finetune import (
    FinetuneJobSpec,
    check_qlora_supported,
    load_examples,
    load_job_spec,
    load_splits,
    parse_progress_line,
    preflight,
    tokenize_examples,
)
from lumos_ray.finetune._demo import write_color_dataset

REPO = Path(__file__).resolve().parents[2]
LUMOS = str(Path(sys.executable).parent / "lumos")


@pytest.fixture(scope="module")
def tiny() -> str:
    from lumos_ray.models import tiny_model_path

    return str(tiny_model_path())


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_broken_json_names_file_and_line(tmp_path: Path) -> None:
    p = _write(tmp_path / "d.jsonl", ['{"text": "ok"}', "", '{"text": "fine"', '{"text": "x"}'])
    with pytest.raises(DatasetError) as ei:
        load_examples(p)
    assert f"{p}:3" in ei.value.message and "broken JSON" in ei.value.message
    assert ei.value.details["line"] == 3


def test_missing_field_names_file_line_and_field(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "i.jsonl",
        [
            json.dumps({"instruction": "add", "input": "1 2", "output": "3"}),
            json.dumps({"instruction": "sub", "input": "3 2"}),
        ],
    )
    with pytest.raises(DatasetError) as ei:
        load_examples(p)
    msg = ei.value.message
    assert f"{p}:2" in msg and "'output'" in msg and "instruction" in msg


def test_chat_last_message_must_be_assistant(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "c.jsonl", [json.dumps({"messages": [{"role": "user", "content": "hi"}]})]
    )
    with pytest.raises(DatasetError, match=r"c.jsonl:1: the last message must have role"):
        load_examples(p)


def test_formats_detected_and_rendered(tmp_path: Path) -> None:
    p = _write(tmp_path / "x.jsonl", [json.dumps({"prompt": "2+2=", "completion": "4"})])
    (ex,), fmt = load_examples(p)
    assert fmt == "completion" and (ex.prompt, ex.response) == ("2+2=", "4")
    p = _write(tmp_path / "y.jsonl", [json.dumps({"instruction": "say hi", "output": "hi"})])
    (ex,), fmt = load_examples(p)
    assert fmt == "instruction" and ex.prompt.endswith("### Response:\n") and ex.response == "hi"


def test_split_is_seeded_and_disjoint(tmp_path: Path) -> None:
    p = write_color_dataset(tmp_path / "c.jsonl", 40)
    tr, va, fmt = load_splits(p, validation_fraction=0.25, seed=3)
    _tr2, va2, _ = load_splits(p, validation_fraction=0.25, seed=3)
    assert fmt == "chat" and len(va) == 10 and len(tr) == 30
    assert [e.source for e in va] == [e.source for e in va2]
    assert not {e.source for e in tr} & {e.source for e in va}


def test_tokenize_masks_prompt_with_chat_template(tmp_path: Path, tiny: str) -> None:
    from lumos_ray.finetune._model import load_tokenizer

    tok = load_tokenizer(tiny)
    p = write_color_dataset(tmp_path / "c.jsonl", 4)
    exs, _ = load_examples(p)
    (t, *_) = tokenize_examples(exs, tok, 128)
    n_prompt = sum(1 for lbl in t.labels if lbl == -100)
    assert 0 < n_prompt < len(t.labels)
    target = tok.decode([i for i, lbl in zip(t.input_ids, t.labels, strict=True) if lbl != -100])
    assert target.startswith("The ") and exs[0].response in target
    prompt = tok.decode(t.input_ids[:n_prompt])
    assert "<|im_start|>assistant" in prompt and "what color" in prompt


def test_yaml_spec_errors_name_file_and_field(tmp_path: Path) -> None:
    y = tmp_path / "job.yaml"
    y.write_text("name: j\nbase_model: m\ndataset: {path: d.jsonl}\nlora: {r: 0}\n")
    with pytest.raises(ConfigError, match=r"job.yaml: lora.r: "):
        load_job_spec(y)
    y.write_text("name: j\nbase_model: m\ndataset: {path: d.jsonl}\ntraning: {}\n")
    with pytest.raises(ConfigError, match="traning"):
        load_job_spec(y)


def test_example_configs_load_and_resolve_relative_paths() -> None:
    for name in ("lumos-tiny-lora.yaml", "lumos-tiny-qlora.yaml"):
        spec = load_job_spec(REPO / "configs" / "finetune" / name)
        assert Path(spec.dataset.path).is_absolute() and Path(spec.dataset.path).is_file()
        assert (Path(spec.base_model) / "config.json").is_file()


def test_unknown_target_module_lists_available(tmp_path: Path, tiny: str) -> None:
    spec = FinetuneJobSpec(
        name="bad",
        base_model=tiny,
        dataset={"path": str(write_color_dataset(tmp_path / "c.jsonl", 8))},
        lora={"target_modules": ["q_proj", "query_key_value"]},
    ).resolve_paths()
    with pytest.raises(ConfigError) as ei:
        preflight(spec)
    assert "query_key_value" in ei.value.message
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj"} <= set(
        ei.value.details["available"]
    )
    assert "q_proj" not in ei.value.details["missing"]


def test_qlora_where_bitsandbytes_cannot_run_is_a_clear_error() -> None:
    import torch

    check_qlora_supported("cpu", "nf4")  # bitsandbytes >= 0.50 runs 4-bit on CPU
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the failing device below would work")
    with pytest.raises(ConfigError) as ei:
        check_qlora_supported("cuda", "nf4")
    assert "QLoRA" in ei.value.message and "'cuda'" in ei.value.message
    assert "remove lora.quantization" in ei.value.fix


def test_progress_writer_file_and_otel_metrics(tmp_path: Path) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from lumos_ray.finetune._telemetry import PROGRESS_PREFIX, ProgressWriter

    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("lumos_ray.finetune")
    w = ProgressWriter(tmp_path / "p.jsonl", "job1", meter=meter)
    for s in (1, 2):
        w.step(
            step=s,
            total_steps=4,
            loss=2.0 / s,
            tokens=100,
            tokens_per_s=50.0,
            eta_s=4.0,
            lr=1e-3,
            epoch=0,
        )
    w.eval(step=2, eval_loss=1.5)
    events = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["step", "step", "eval"]
    assert parse_progress_line("junk " + PROGRESS_PREFIX + json.dumps(events[1]))["loss"] == 1.0
    assert parse_progress_line("no progress here") is None
    data = reader.get_metrics_data()
    got = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert got["lumos.finetune.steps"].data.data_points[0].value == 2
    assert got["lumos.finetune.tokens"].data.data_points[0].value == 200
    assert got["lumos.finetune.eval_loss"].data.data_points[0].sum == 1.5
    assert {
        "lumos.finetune.loss",
        "lumos.finetune.tokens_per_second",
        "lumos.finetune.eta_seconds",
    } <= set(got)


def test_errors_survive_pickle_with_details() -> None:
    import pickle

    err = DatasetError("f.jsonl:3: broken JSON", file="f.jsonl", line=3)
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, LumosError) and back.details == {"file": "f.jsonl", "line": 3}


def test_cli_validate_reports_bad_dataset_line_without_traceback(tmp_path: Path) -> None:
    data = _write(tmp_path / "d.jsonl", ['{"text": "a"}', '{"txt": "b"}'])
    y = tmp_path / "job.yaml"
    y.write_text(f"name: j\nbase_model: lumos-tiny\ndataset: {{path: {data}}}\n")
    proc = subprocess.run(
        [LUMOS, "finetune", "validate", str(y), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = json.loads(proc.stdout)["error"]
    assert err["code"] == "LUMOS-E050" and f"{data}:2" in err["message"]
    assert "Traceback" not in proc.stderr


def test_cli_job_commands_need_a_jobs_address() -> None:
    proc = subprocess.run(
        [LUMOS, "finetune", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "LUMOS_RAY_ADDRESS": ""},
    )
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["error"]["code"] == "LUMOS-E002"
