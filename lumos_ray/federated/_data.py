"""Synthetic tabular data and its split into sites.

Why synthetic: CI has no dataset downloads, and a generator with a seed lets every site
(and the server's held-out set, and the centralized baseline) rebuild exactly the same
samples without shipping data around: only the partition id travels.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from lumos_ray.federated._config import DataConfig

__all__ = ["full_dataset", "load_site_file", "site_partition"]


@lru_cache(maxsize=8)
def full_dataset(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): Gaussian class clusters, fixed by the seed."""
    rng = np.random.default_rng(cfg.seed)
    centers = rng.normal(0.0, 2.0, size=(cfg.num_classes, cfg.num_features))
    y = rng.integers(0, cfg.num_classes, size=cfg.num_samples)
    x = centers[y] + rng.normal(0.0, cfg.noise, size=(cfg.num_samples, cfg.num_features))
    n_test = max(1, int(cfg.num_samples * cfg.test_fraction))
    order = rng.permutation(cfg.num_samples)
    test, train = order[:n_test], order[n_test:]
    return (
        x[train].astype(np.float32),
        y[train].astype(np.int64),
        x[test].astype(np.float32),
        y[test].astype(np.int64),
    )


def _split_indices(cfg: DataConfig, y: np.ndarray, num_partitions: int) -> list[np.ndarray]:
    rng = np.random.default_rng(cfg.seed + 1)
    if cfg.iid:
        return list(np.array_split(rng.permutation(len(y)), num_partitions))
    # Label skew: per class, Dirichlet proportions over sites.
    parts: list[list[int]] = [[] for _ in range(num_partitions)]
    for c in range(cfg.num_classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        props = rng.dirichlet([cfg.dirichlet_alpha] * num_partitions)
        cuts = (np.cumsum(props)[:-1] * len(idx)).astype(int)
        for p, chunk in enumerate(np.split(idx, cuts)):
            parts[p].extend(chunk.tolist())
    return [np.array(sorted(p), dtype=np.int64) for p in parts]


def site_partition(
    cfg: DataConfig, partition_id: int, num_partitions: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A site's (x_train, y_train, x_val, y_val): its share of the train split, 80/20."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id {partition_id} outside 0..{num_partitions - 1}")
    x, y, _, _ = full_dataset(cfg)
    idx = _split_indices(cfg, y, num_partitions)[partition_id]
    n_val = max(1, len(idx) // 5)
    val, tr = idx[:n_val], idx[n_val:]
    return x[tr], y[tr], x[val], y[val]


def load_site_file(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A site's own data: an .npz with arrays ``x`` (float) and ``y`` (int labels)."""
    with np.load(path) as f:
        x = np.asarray(f["x"], dtype=np.float32)
        y = np.asarray(f["y"], dtype=np.int64)
    n_val = max(1, len(y) // 5)
    return x[n_val:], y[n_val:], x[:n_val], y[:n_val]
