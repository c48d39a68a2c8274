"""Federated LoRA of a causal LM: sites train adapters, only adapter weights travel.

The local step is a minimal peft LoRA loop written here because the fine-tuning
subsystem's training step (lumos_ray/finetune) was not committed when this landed; it
uses the same libraries (transformers + peft) and the same lumos-tiny model.

Text data: each site gets its own deterministic slice of templated sentences (a
distribution the random-init base model has never seen), and the server holds a
disjoint held-out slice, so "held-out loss went down" means the adapter learned.
"""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from lumos_ray.federated._config import FederationConfig, LoraConfig

__all__ = [
    "adapter_arrays",
    "heldout_texts",
    "load_lora_model",
    "lora_evaluate",
    "lora_train_local",
    "save_adapter",
    "set_adapter_arrays",
    "site_texts",
]

_SUBJECTS = ["the site", "a hospital", "the bank", "a school", "the lab", "a farm"]
_VERBS = ["trains", "shares", "keeps", "sends", "checks", "averages"]
_OBJECTS = ["its model", "the update", "local data", "the weights", "an adapter"]
_ENDS = ["every round.", "with the server.", "at night.", "without moving data."]


def _sentences(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return [
        f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_ENDS)}"
        for _ in range(n)
    ]


def site_texts(cfg: FederationConfig, partition_id: int) -> list[str]:
    return _sentences(cfg.seed * 1000 + partition_id + 1, cfg.lora.samples_per_site)


def heldout_texts(cfg: FederationConfig) -> list[str]:
    return _sentences(cfg.seed * 1000 + 999_983, cfg.lora.heldout_samples)


def base_model_dir(lcfg: LoraConfig) -> str:
    if lcfg.base_model:
        return lcfg.base_model
    from lumos_ray.models import tiny_model_path

    return str(tiny_model_path())


@lru_cache(maxsize=2)
def _load(base_dir: str, rank: int, alpha: int, dropout: float, targets: tuple[str, ...]):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)  # identical LoRA init on server and every site
    tok = AutoTokenizer.from_pretrained(base_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft_cfg = PeftLoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(targets),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, peft_cfg), tok


def load_lora_model(cfg: FederationConfig) -> tuple[Any, Any]:
    """(peft model, tokenizer), cached per process (a Ray actor keeps it across rounds)."""
    lc = cfg.lora
    return _load(base_model_dir(lc), lc.rank, lc.alpha, lc.dropout, tuple(lc.target_modules))


def adapter_arrays(model: Any) -> dict[str, np.ndarray]:
    """Only the LoRA tensors: this is all that crosses the network."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().numpy().copy() for k, v in get_peft_model_state_dict(model).items()}


def set_adapter_arrays(model: Any, arrays: dict[str, np.ndarray]) -> None:
    from peft import set_peft_model_state_dict

    state = {k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}
    set_peft_model_state_dict(model, state)


def _batches(tok: Any, texts: list[str], max_length: int, batch_size: int):
    for i in range(0, len(texts), batch_size):
        enc = tok(
            texts[i : i + batch_size],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_length,
        )
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        yield enc, labels


def lora_train_local(
    model: Any, tok: Any, texts: list[str], cfg: FederationConfig, *, epochs: int, seed: int
) -> dict[str, Any]:
    torch.set_num_threads(1)
    random.Random(seed).shuffle(texts)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate)
    model.train()
    total, steps = 0.0, 0
    for _ in range(epochs):
        for enc, labels in _batches(tok, texts, cfg.lora.max_length, cfg.batch_size):
            opt.zero_grad()
            out = model(**enc, labels=labels)
            out.loss.backward()
            opt.step()
            total += out.loss.item()
            steps += 1
    return {"train_loss": total / max(steps, 1), "num-examples": len(texts)}


@torch.no_grad()
def lora_evaluate(model: Any, tok: Any, texts: list[str], max_length: int) -> dict[str, float]:
    model.eval()
    total, n = 0.0, 0
    for enc, labels in _batches(tok, texts, max_length, 16):
        out = model(**enc, labels=labels)
        total += float(out.loss) * len(labels)
        n += len(labels)
    return {"loss": total / max(n, 1)}


def save_adapter(cfg: FederationConfig, arrays: dict[str, np.ndarray], out_dir: str) -> str:
    model, tok = load_lora_model(cfg)
    set_adapter_arrays(model, arrays)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir
