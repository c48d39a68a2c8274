"""Federated LoRA's site step is the fine-tuning step: one site round in-process (no
Flower, no Ray) on lumos-tiny, plain and QLoRA, from synthetic text or a site's JSONL."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lumos_ray.federated import FederationConfig
from lumos_ray.federated._apps import _from_record, get_app_spec


def _cfg(**lora) -> FederationConfig:
    return FederationConfig.model_validate(
        {
            "app": "lora",
            "learning_rate": 0.01,
            "batch_size": 8,
            "lora": {"r": 4, "alpha": 8, **lora},
            "lm": {"samples_per_site": 16, "heldout_samples": 16},
        }
    )


@pytest.mark.parametrize("quantization", [None, {"bits": 4}])
def test_site_round_trains_only_the_adapter_and_lowers_heldout_loss(quantization) -> None:
    cfg = _cfg(quantization=quantization)
    app = get_app_spec("lora")
    start = app.initial_arrays(cfg)
    keys = list(start.keys())
    assert keys and all("lora_" in k for k in keys)
    assert all(not np.any(v) for k, v in _from_record(start).items() if "lora_B" in k)
    before = app.central_evaluate(cfg, start)["loss"]
    site = {"partition-id": 0, "num-partitions": 2}
    arrays, metrics = app.local_train(cfg, start, site, epochs=2, proximal_mu=0.0, seed=1)
    assert list(arrays.keys()) == keys  # the same adapter tensors travel back
    assert metrics["num-examples"] == 16 and np.isfinite(metrics["train_loss"])
    assert app.central_evaluate(cfg, arrays)["loss"] < before


def test_site_with_its_own_jsonl_trains_on_it(tmp_path: Path) -> None:
    data = tmp_path / "site.jsonl"
    rows = [
        {"instruction": f"count to {i}", "output": " ".join(map(str, range(i)))}
        for i in range(2, 8)
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = _cfg()
    app = get_app_spec("lora")
    site = {"partition-id": 0, "num-partitions": 1, "data-file": str(data)}
    _, metrics = app.local_train(
        cfg, app.initial_arrays(cfg), site, epochs=1, proximal_mu=0.0, seed=0
    )
    assert metrics["num-examples"] == len(rows)


def test_final_adapter_is_a_new_registry_version_never_over_the_served_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lumos_ray.adapters import AdapterRegistry

    monkeypatch.setenv("LUMOS_HOME", str(tmp_path / "home"))
    cfg = _cfg()
    app = get_app_spec("lora")
    arrays = app.initial_arrays(cfg)
    first = app.finalize(cfg, arrays, "run-1")
    assert (first["adapter"], first["adapter_version"]) == ("federated-lora-v1", 1)
    served = Path(first["adapter_path"])
    served_bytes = {p.name: p.read_bytes() for p in served.iterdir()}
    # A second run ends with different adapter weights.
    trained, _ = app.local_train(
        cfg, arrays, {"partition-id": 0, "num-partitions": 2}, epochs=1, proximal_mu=0.0, seed=1
    )
    second = app.finalize(cfg, trained, "run-2")
    assert second["adapter"] == "federated-lora-v2"
    assert {p.name: p.read_bytes() for p in served.iterdir()} == served_bytes
    reg = AdapterRegistry()
    assert reg.get("federated-lora-v1").metadata["run"] == "run-1"
    assert reg.latest("federated-lora").metadata["run"] == "run-2"
    new = Path(second["adapter_path"], "adapter_model.safetensors").read_bytes()
    assert new != served_bytes["adapter_model.safetensors"]
