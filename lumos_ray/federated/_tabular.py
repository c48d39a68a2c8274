"""The generic PyTorch app: a small classifier on tabular data.

Kept deliberately small (a linear model or one hidden layer) so a round costs
milliseconds of compute and CI time goes to the federation machinery itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from lumos_ray.federated._config import FederationConfig

__all__ = ["build_model", "evaluate", "train_centralized", "train_local"]


def build_model(cfg: FederationConfig) -> nn.Module:
    """Same seed everywhere, so the server's initial model is reproducible."""
    torch.manual_seed(cfg.seed)
    d, k, h = cfg.data.num_features, cfg.data.num_classes, cfg.hidden_units
    if h == 0:
        return nn.Sequential(nn.Linear(d, k))
    return nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, k))


def train_local(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    cfg: FederationConfig,
    *,
    epochs: int,
    proximal_mu: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Minibatch SGD; with ``proximal_mu`` > 0 adds FedProx's proximal term."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    global_params = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    total, count = 0.0, 0
    for _ in range(epochs):
        order = torch.randperm(len(yt), generator=gen)
        for start in range(0, len(yt), cfg.batch_size):
            b = order[start : start + cfg.batch_size]
            opt.zero_grad()
            loss = loss_fn(model(xt[b]), yt[b])
            if proximal_mu > 0:
                prox = sum(
                    ((p - g) ** 2).sum()
                    for p, g in zip(model.parameters(), global_params, strict=True)
                )
                loss = loss + proximal_mu / 2 * prox
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
            count += len(b)
    return {"train_loss": total / max(count, 1), "num-examples": len(yt)}


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    model.eval()
    logits = model(torch.from_numpy(x))
    yt = torch.from_numpy(y)
    loss = nn.functional.cross_entropy(logits, yt).item()
    acc = (logits.argmax(dim=1) == yt).float().mean().item()
    return {"loss": loss, "accuracy": acc}


def train_centralized(cfg: FederationConfig, epochs: int) -> dict[str, float]:
    """The baseline: one model trained on all sites' data pooled together."""
    from lumos_ray.federated._data import full_dataset

    x, y, xt, yt = full_dataset(cfg.data)
    model = build_model(cfg)
    train_local(model, x, y, cfg, epochs=epochs, seed=cfg.seed)
    return evaluate(model, xt, yt)
