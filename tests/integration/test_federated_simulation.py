"""Federated simulation on the session's Ray cluster, through Flower's Ray backend.

Each simulation runs in a driver subprocess attached to the session cluster by address
(``python -m lumos_ray.federated._job`` -- the Ray job entrypoint), because
Flower's RayBackend calls ``ray.shutdown()`` when a simulation ends, which in this
process would stop the session cluster. One ClientApp actor per simulation
(``max_parallel_sites: 1``): on 2 cores a second actor only adds a second torch import.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lumos_ray.federated import FederationConfig

pytestmark = pytest.mark.slow


def _simulate(
    ray_cluster, tmp_path: Path, cfg: dict, run_name: str, timeout: int = 420, cli: bool = False
):
    cfg_file = tmp_path / f"{run_name}.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    # The Ray-job entrypoint, or the user-facing command (`lumos federate simulate`).
    entry = ["lumos_ray", "federate", "simulate"] if cli else ["lumos_ray.federated._job"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            *entry,
            str(cfg_file),
            "--address",
            ray_cluster.address,
            "--run-name",
            run_name,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )
    home = Path(os.environ["LUMOS_HOME"]) / "federated" / run_name
    status = json.loads((home / "status.json").read_text()) if home.exists() else None
    rounds = (
        [json.loads(x) for x in (home / "rounds.jsonl").read_text().splitlines()]
        if (home / "rounds.jsonl").exists()
        else []
    )
    return proc, status, rounds


TABULAR = {
    "app": "tabular",
    "rounds": 3,
    "local_epochs": 1,
    "learning_rate": 0.05,
    "batch_size": 32,
    "min_available_sites": 4,
    "min_train_sites": 4,
    "fraction_evaluate": 0.0,
    "data": {
        "num_samples": 2000,
        "num_features": 10,
        "num_classes": 3,
        "noise": 3.0,
        "iid": True,
        "seed": 0,
    },
    "simulation": {"num_sites": 4, "max_parallel_sites": 1},
}


def test_simulation_4_sites_3_rounds_loss_decreases_and_matches_centralized(ray_cluster, tmp_path):
    proc, status, rounds = _simulate(ray_cluster, tmp_path, TABULAR, "sim-fedavg", cli=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert status["state"] == "succeeded"
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert all(r["sites_replied"] == 4 for r in rounds)
    assert all(r["bytes_sent"] > 0 and r["bytes_received"] > 0 for r in rounds)
    losses = [status["initial"]["loss"]] + [r["global_loss"] for r in rounds]
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    assert "[lumos federate] round 3:" in proc.stdout  # per-round progress

    # Centralized baseline: the same total data (the union of the 4 sites' training
    # shares), the same model, optimizer and number of passes over the data.
    import numpy as np

    from lumos_ray.federated._data import full_dataset, site_partition
    from lumos_ray.federated._tabular import build_model, evaluate, train_local

    cfg = FederationConfig.model_validate(TABULAR)
    parts = [site_partition(cfg.data, i, 4) for i in range(4)]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    model = build_model(cfg)
    train_local(model, x, y, cfg, epochs=cfg.rounds * cfg.local_epochs, seed=cfg.seed)
    _, _, xt, yt = full_dataset(cfg.data)
    central = evaluate(model, xt, yt)["accuracy"]
    fed = rounds[-1]["global_accuracy"]
    assert 0.5 < central < 0.99, central  # a task where 2 points is a real margin
    assert fed >= central - 0.02, (fed, central)


def test_robust_aggregation_rejects_nan_and_resists_scaled_updates(ray_cluster, tmp_path):
    cfg = {
        **TABULAR,
        "rounds": 2,
        "min_available_sites": 5,
        "min_train_sites": 3,
        "robust": {"method": "krum", "num_malicious": 1},
        "attack": {"sites": [0], "kind": "nan"},
        "simulation": {"num_sites": 5, "max_parallel_sites": 1},
    }
    # Site 0 sends NaN (rejected by the guard); site 1 sends updates scaled by 1e4
    # (Krum picks an update close to its neighbours instead).
    proc, status, rounds = _simulate(ray_cluster, tmp_path, cfg, "sim-nan", timeout=420)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert all(r["sites_rejected"] == 1 for r in rounds), rounds
    assert all(r["sites_replied"] == 4 for r in rounds)
    final = rounds[-1]
    assert final["global_loss"] == final["global_loss"]  # not NaN
    assert final["global_loss"] < status["initial"]["loss"]


def test_federated_lora_on_lumos_tiny_lowers_heldout_loss_and_registers_adapter(
    ray_cluster, tmp_path
):
    cfg = {
        "app": "lora",
        "rounds": 2,
        "local_epochs": 1,
        "learning_rate": 0.01,
        "batch_size": 8,
        "min_available_sites": 2,
        "min_train_sites": 2,
        "fraction_evaluate": 0.0,
        "lora": {"r": 4, "alpha": 8},
        "lm": {"samples_per_site": 16, "heldout_samples": 16, "adapter_name": "fed-lora-test"},
        "simulation": {"num_sites": 2, "max_parallel_sites": 1},
    }
    proc, status, rounds = _simulate(ray_cluster, tmp_path, cfg, "sim-lora", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    losses = [status["initial"]["loss"]] + [r["global_loss"] for r in rounds]
    assert losses[-1] < losses[0], losses

    from lumos_ray.adapters import AdapterRegistry
    from lumos_ray.models import tiny_model_path

    # Registered as a new version, never over an entry a gateway may be serving.
    name = status["result"]["adapter"]
    assert name.startswith("fed-lora-test-v")
    rec = AdapterRegistry().get(name)
    assert rec.version_of == "fed-lora-test" and AdapterRegistry().latest("fed-lora-test") == rec
    assert rec.metadata["source"] == "federated" and rec.metadata["run"] == "sim-lora"
    assert rec.metadata["hyperparameters"]["lora"]["r"] == 4  # the one LoraSpec, as jobs
    assert Path(rec.base_model) == tiny_model_path()
    assert (Path(rec.path) / "adapter_config.json").is_file()
    # Only adapter tensors travelled: per site, one payload down and one up.
    adapter_bytes = status["result"]["adapter_bytes"]
    assert rounds[0]["bytes_sent"] == rounds[0]["bytes_received"] == 2 * adapter_bytes
    full_model_bytes = sum(f.stat().st_size for f in tiny_model_path().glob("*.safetensors"))
    assert adapter_bytes * 10 < full_model_bytes


def test_secagg_plus_aggregate_equals_plain_weighted_mean(ray_cluster, tmp_path):
    cfg_dict = {
        **TABULAR,
        "rounds": 2,
        "min_available_sites": 3,
        "min_train_sites": 3,
        "privacy": {"secagg": True, "secagg_num_shares": 3, "secagg_reconstruction_threshold": 2},
        "simulation": {"num_sites": 3, "max_parallel_sites": 1},
    }
    proc, status, rounds = _simulate(ray_cluster, tmp_path, cfg_dict, "sim-secagg")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Secure aggregation completed" in proc.stdout + proc.stderr
    assert status["result"]["secagg"] == "SecAgg+"
    assert [r["sites_replied"] for r in rounds] == [3, 3]

    # The same rounds computed here in the clear: each site trains from the global
    # model with the seed the ClientApp uses, then the example-weighted mean.
    import torch

    from lumos_ray.federated._apps import get_app_spec

    cfg = FederationConfig.model_validate(cfg_dict)
    spec = get_app_spec("tabular")
    arrays = spec.initial_arrays(cfg)
    for rnd in (1, 2):
        outs = []
        for pid in range(3):
            site = {"partition-id": pid, "num-partitions": 3}
            new, m = spec.local_train(
                cfg,
                arrays,
                site,
                epochs=1,
                proximal_mu=0.0,
                seed=cfg.seed * 10007 + rnd * 101 + pid,
            )
            outs.append((new.to_torch_state_dict(), m["num-examples"]))
        total = sum(n for _, n in outs)
        mean = {k: sum(sd[k] * (n / total) for sd, n in outs) for k in outs[0][0]}
        from flwr.app import ArrayRecord

        arrays = ArrayRecord({k: v.to(torch.float32) for k, v in mean.items()})
    expected = spec.central_evaluate(cfg, arrays)["loss"]
    # SecAgg+ quantizes the masked vectors: equal up to quantization error.
    assert abs(rounds[-1]["global_loss"] - expected) < 1e-3, (rounds[-1], expected)
