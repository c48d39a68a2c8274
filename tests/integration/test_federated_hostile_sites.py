"""Must-show: a 3-site federation on Flower's Ray simulation backend where one site
reports 1e15 examples and another sends huge opposite weights (its trained arrays
times -1e30). With the deployment defaults (Flower's FedMedian behind the lumos update
guard) the global model stays finite and close to the honest-sites result.

The honest-sites result is computed here in the clear: the same three sites train from
the same global model with the seeds the ClientApp uses, and their updates are averaged
by their true example counts (FedAvg), round after round. The stated distance (also in
docs/federated.md): the final global model is within ``MAX_RELATIVE_DISTANCE`` of the
honest result, measured as ||attacked - honest|| / ||honest - initial|| (L2 over all
arrays: how far from the honest model, relative to how far honest training moved it),
and its held-out loss within ``MAX_LOSS_GAP`` of the honest model's.
"""

from __future__ import annotations

import numpy as np
import pytest

from lumos_ray.federated import FederationConfig
from tests.integration.test_federated_simulation import TABULAR, _simulate

pytestmark = pytest.mark.slow

MAX_RELATIVE_DISTANCE = 0.3  # measured 0.21 (3 rounds, 3 sites, seed 0)
MAX_LOSS_GAP = 0.05  # measured 0.013

HOSTILE = {
    **TABULAR,
    "rounds": 3,
    "min_available_sites": 3,
    "min_train_sites": 3,
    # The deployment default (robust.method: auto resolves to median for real sites);
    # a simulation defaults to the plain strategy, so it is stated here.
    "robust": {"method": "median"},
    "attack": {
        "per_site": [
            {"site": 0, "kind": "examples", "examples": 1e15},
            {"site": 1, "kind": "scale", "scale": -1e30},
        ]
    },
    "simulation": {"num_sites": 3, "max_parallel_sites": 1},
}


def _honest_result(cfg: FederationConfig) -> dict[str, np.ndarray]:
    """The three sites, all honest, FedAvg by their true example counts."""
    from flwr.app import Array, ArrayRecord

    from lumos_ray.federated._apps import get_app_spec

    spec = get_app_spec("tabular")
    arrays = spec.initial_arrays(cfg)
    n = cfg.simulation.num_sites
    for rnd in range(1, cfg.rounds + 1):
        outs = []
        for pid in range(n):
            new, m = spec.local_train(
                cfg,
                arrays,
                {"partition-id": pid, "num-partitions": n},
                epochs=cfg.local_epochs,
                proximal_mu=0.0,
                seed=cfg.seed * 10007 + rnd * 101 + pid,
            )
            outs.append((new, float(m["num-examples"])))
        total = sum(w for _, w in outs)
        arrays = ArrayRecord(
            {
                k: Array(sum(rec[k].numpy().astype(np.float64) * (w / total) for rec, w in outs))
                for k in arrays.keys()
            }
        )
    return {k: arrays[k].numpy() for k in arrays.keys()}


def _distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(((a[k] - b[k]).astype(np.float64) ** 2).sum() for k in a)))


def _relative_distance(cfg: FederationConfig, model_file: str) -> tuple[float, dict]:
    """(||attacked - honest|| / ||honest - initial||, the honest arrays)."""
    from lumos_ray.federated._apps import get_app_spec

    with np.load(model_file) as f:
        attacked = {k: f[k] for k in f.files}
    if not all(np.all(np.isfinite(v)) for v in attacked.values()):
        return float("inf"), {}
    initial = get_app_spec("tabular").initial_arrays(cfg)
    start = {k: initial[k].numpy() for k in initial.keys()}
    honest = _honest_result(cfg)
    return _distance(attacked, honest) / _distance(honest, start), honest


def test_site_claiming_1e15_examples_and_site_sending_huge_opposite_weights(ray_cluster, tmp_path):
    from flwr.app import Array, ArrayRecord

    from lumos_ray.federated._apps import get_app_spec

    proc, status, rounds = _simulate(ray_cluster, tmp_path, HOSTILE, "sim-hostile")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert status["state"] == "succeeded" and [r["round"] for r in rounds] == [1, 2, 3]
    # Every round: the 1e15 claim was bounded, no reply had to be dropped.
    assert all(r["extra"]["weight_clipped_sites"] == 1 for r in rounds), rounds
    assert all(r["sites_replied"] == 3 for r in rounds)

    cfg = FederationConfig.model_validate(HOSTILE)
    spec = get_app_spec("tabular")
    relative, honest = _relative_distance(cfg, status["result"]["model"])
    assert np.isfinite(relative), "the global model holds NaN/Inf"
    honest_loss = spec.central_evaluate(
        cfg, ArrayRecord({k: Array(v.astype(np.float32)) for k, v in honest.items()})
    )["loss"]
    attacked_loss = rounds[-1]["global_loss"]
    print(
        f"relative distance {relative:.4f}; loss attacked {attacked_loss:.4f} "
        f"honest {honest_loss:.4f} initial {status['initial']['loss']:.4f}"
    )
    assert relative <= MAX_RELATIVE_DISTANCE, relative
    assert abs(attacked_loss - honest_loss) <= MAX_LOSS_GAP, (attacked_loss, honest_loss)
    assert attacked_loss < status["initial"]["loss"]


def test_the_same_attack_with_the_defences_off_moves_the_model_far_away(ray_cluster, tmp_path):
    """Control: what the defences prevent. Plain FedAvg, no bound on reported example
    counts: after one round the model is nowhere near the honest result."""
    off = {
        **HOSTILE,
        "rounds": 1,
        "robust": {"method": "none", "max_weight_ratio": None},
    }
    proc, status, rounds = _simulate(ray_cluster, tmp_path, off, "sim-hostile-off")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert rounds[0]["extra"]["weight_clipped_sites"] == 0
    relative, _ = _relative_distance(
        FederationConfig.model_validate(off), status["result"]["model"]
    )
    print(f"defences off: relative distance {relative:.4g}")
    assert relative > 1000 * MAX_RELATIVE_DISTANCE, relative  # (inf: not even finite)
