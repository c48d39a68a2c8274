"""Fine-tuning on the session's real Ray cluster: LoRA with 2 DDP workers, QLoRA.

Loss claims are about held-out data (the split the workers never train on), compared
with the base model's loss on the same split measured by the same job.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lumos_ray.finetune import FinetuneJobSpec, run_finetune
from lumos_ray.finetune._demo import write_color_dataset

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def tiny() -> str:
    from lumos_ray.models import tiny_model_path

    return str(tiny_model_path())


@pytest.fixture(scope="module")
def colors(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_color_dataset(tmp_path_factory.mktemp("ftdata") / "colors.jsonl", 72))


def _spec(tmp: Path, tiny: str, colors: str, name: str, **over: object) -> FinetuneJobSpec:
    base = {
        "name": name,
        "base_model": tiny,
        "dataset": {"path": colors, "validation_fraction": 0.15},
        "optimizer": {"lr": 5e-3},
        "training": {"max_steps": 30, "batch_size": 8, "seq_len": 64, "log_every_steps": 10},
        "checkpoint": {"every_steps": 15},
        "output": {"storage_dir": str(tmp / "runs"), "registry_dir": str(tmp / "registry")},
    }
    base.update(over)
    return FinetuneJobSpec.model_validate(base)


def test_two_worker_lora_in_sync_one_adapter_lower_heldout_loss(
    ray_cluster, tmp_path: Path, tiny: str, colors: str
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lumos_ray.adapters import AdapterRegistry

    spec = _spec(
        tmp_path,
        tiny,
        colors,
        "lora2",
        scaling={"num_workers": 2},
        output={
            "storage_dir": str(tmp_path / "runs"),
            "registry_dir": str(tmp_path / "reg"),
            "adapter_name": "colors-lora",
            "merge": True,
            "metrics_exporter": f"jsonl:{tmp_path / 'otel'}",
        },
    )
    res = run_finetune(spec)
    m = res.metrics
    assert m["world_size"] == 2 and m["step"] == 30 and m["resumed_from_step"] == 0
    assert m["eval_loss"] < m["base_eval_loss"] * 0.9, m
    # Both replicas ended with bit-identical adapters (gradients were all-reduced).
    assert len(m["replica_fingerprints"]) == 2 and m["replicas_in_sync"]
    assert len(set(m["replica_fingerprints"])) == 1

    # Progress went out as OpenTelemetry metrics too (rank 0 only: one exporter file).
    (mfile,) = list((tmp_path / "otel").iterdir())
    last = json.loads(mfile.read_text().splitlines()[-1])
    metrics = {
        mt["name"]: mt["data"]
        for rm in last["resource_metrics"]
        for sm in rm["scope_metrics"]
        for mt in sm["metrics"]
    }
    assert metrics["lumos.finetune.steps"]["data_points"][0]["value"] == 30
    assert metrics["lumos.finetune.eval_loss"]["data_points"][0]["count"] == 1
    assert metrics["lumos.finetune.tokens"]["data_points"][0]["value"] == m["tokens_seen"]

    # Exactly one adapter, in the registry, with provenance metadata.
    records = AdapterRegistry(tmp_path / "reg").list()
    assert [r.name for r in records] == ["colors-lora"]
    meta = records[0].metadata
    assert len(meta["base_model_sha256"]) == 64 and len(meta["dataset_sha256"]) == 64
    assert meta["hyperparameters"]["lora"]["r"] == 8
    assert meta["metrics"]["eval_loss"] == m["eval_loss"]
    assert records[0].base_model == tiny

    # The registered adapter and the merged model compute the same function, and it
    # differs from the base model's.
    ids = torch.tensor([[1, 20, 30, 40, 50, 60]])
    base = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = base(ids).logits
        peft_logits = PeftModel.from_pretrained(base, records[0].path).eval()(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(res.merged_dir, dtype=torch.float32)
        merged_logits = merged.eval()(ids).logits
    assert torch.allclose(peft_logits, merged_logits, atol=1e-4)
    assert not torch.allclose(base_logits, peft_logits, atol=1e-3)


def test_qlora_4bit_on_cpu_lowers_heldout_loss(
    ray_cluster, tmp_path: Path, tiny: str, colors: str
) -> None:
    spec = _spec(
        tmp_path,
        tiny,
        colors,
        "qlora1",
        lora={"quantization": {"bits": 4, "quant_type": "nf4", "double_quant": True}},
    )
    res = run_finetune(spec)
    m = res.metrics
    assert m["step"] == 30
    assert m["eval_loss"] < m["base_eval_loss"] * 0.9, m
    assert res.metadata["hyperparameters"]["lora"]["quantization"]["bits"] == 4
    cfg = (Path(res.adapter_dir) / "adapter_config.json").read_text()
    assert "q_proj" in cfg
