"""Federated LoRA of a causal LM: sites train adapters, only adapter weights travel.

Built on the fine-tuning package, not beside it: the adapter is the fine-tuning
:class:`~lumos_ray.finetune.LoraSpec` (QLoRA included), the model is loaded and
wrapped by the same functions a Ray Train worker uses, text is tokenized with the
same loss masking, and a site's local round is :func:`~lumos_ray.finetune.train_epochs`,
which runs the fine-tuning job's own optimizer step. What federation adds is only
where the text comes from and that the adapter is averaged between rounds.

Text data: each site gets its own deterministic slice of templated sentences (a
distribution the random-init base model has never seen), or its own JSONL file in any
fine-tuning format (``join --data-file``); the server holds a disjoint held-out slice,
so "held-out loss went down" means the adapter learned.
"""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from lumos_ray.federated._config import FederationConfig, LanguageModelConfig
from lumos_ray.finetune import (
    Example,
    LoraSpec,
    OptimizerSpec,
    TokenizedExample,
    attach_lora,
    evaluate_loss,
    load_base,
    load_examples,
    load_tokenizer,
    tokenize_examples,
    train_epochs,
)

__all__ = [
    "adapter_arrays",
    "base_model_dir",
    "heldout_examples",
    "load_lora_model",
    "lora_evaluate",
    "lora_train_local",
    "save_adapter",
    "set_adapter_arrays",
    "site_examples",
]

_SUBJECTS = ["the site", "a hospital", "the bank", "a school", "the lab", "a farm"]
_VERBS = ["trains", "shares", "keeps", "sends", "checks", "averages"]
_OBJECTS = ["its model", "the update", "local data", "the weights", "an adapter"]
_ENDS = ["every round.", "with the server.", "at night.", "without moving data."]
_EVAL_BATCH = 16


def _sentences(seed: int, n: int, source: str) -> list[Example]:
    rng = random.Random(seed)
    return [
        Example(
            prompt="",
            response=f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} "
            f"{rng.choice(_OBJECTS)} {rng.choice(_ENDS)}",
            source=f"{source}:{i + 1}",
        )
        for i in range(n)
    ]


def site_examples(cfg: FederationConfig, site: dict[str, Any]) -> list[Example]:
    """A site's own text: its JSONL file (``data-file``, any fine-tuning format) when it
    has one, else its synthetic partition."""
    if site.get("data-file"):
        examples, _ = load_examples(str(site["data-file"]))
        return examples
    pid = int(site["partition-id"])
    return _sentences(cfg.seed * 1000 + pid + 1, cfg.lm.samples_per_site, f"site-{pid}")


def heldout_examples(cfg: FederationConfig) -> list[Example]:
    return _sentences(cfg.seed * 1000 + 999_983, cfg.lm.heldout_samples, "heldout")


def base_model_dir(lm: LanguageModelConfig) -> str:
    if lm.base_model:
        return lm.base_model
    from lumos_ray.models import tiny_model_path

    return str(tiny_model_path())


@lru_cache(maxsize=2)
def _load(base_dir: str, lora_json: str) -> tuple[Any, Any]:
    lora = LoraSpec.model_validate_json(lora_json)
    tok = load_tokenizer(base_dir)
    base = load_base(base_dir, lora, "cpu")
    torch.manual_seed(0)  # identical LoRA init on server and every site
    return attach_lora(base, lora, base_dir), tok


def load_lora_model(cfg: FederationConfig) -> tuple[Any, Any]:
    """(peft model, tokenizer), cached per process (a Ray actor keeps it across rounds).

    The cache key is the spec as JSON: two federations with different adapters in one
    process must not share a model."""
    return _load(base_model_dir(cfg.lm), cfg.lora.model_dump_json())


def adapter_arrays(model: Any) -> dict[str, np.ndarray]:
    """Only the adapter tensors: this is all that crosses the network."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().numpy().copy() for k, v in get_peft_model_state_dict(model).items()}


def set_adapter_arrays(model: Any, arrays: dict[str, np.ndarray]) -> None:
    from peft import set_peft_model_state_dict

    state = {k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}
    set_peft_model_state_dict(model, state)


def tokenize(tok: Any, examples: list[Example], cfg: FederationConfig) -> list[TokenizedExample]:
    return tokenize_examples(examples, tok, cfg.lm.seq_len)


def lora_train_local(
    model: Any,
    tok: Any,
    examples: list[Example],
    cfg: FederationConfig,
    *,
    epochs: int,
    seed: int,
) -> dict[str, Any]:
    """One site's round: the fine-tuning step over the site's text for ``epochs``.

    AdamW at ``learning_rate`` with a constant schedule, and the fine-tuning default
    gradient clipping: a round is a short, fresh run from the server's aggregate."""
    torch.set_num_threads(1)  # sites share the machine's cores with each other
    toks = tokenize(tok, examples, cfg)
    out = train_epochs(
        model,
        toks,
        optimizer=OptimizerSpec(name="adamw", lr=cfg.learning_rate, schedule="constant"),
        batch_size=cfg.batch_size,
        epochs=epochs,
        seed=seed,
        pad_id=tok.pad_token_id,
    )
    return {"train_loss": out["train_loss"], "num-examples": len(toks)}


def lora_evaluate(
    model: Any, tok: Any, examples: list[Example], cfg: FederationConfig
) -> dict[str, float]:
    """Mean next-token loss over the examples' response tokens (fine-tuning's metric)."""
    total, count = evaluate_loss(
        model, tokenize(tok, examples, cfg), tok.pad_token_id, _EVAL_BATCH, "cpu"
    )
    return {"loss": total / max(count, 1)}


def save_adapter(cfg: FederationConfig, arrays: dict[str, np.ndarray], out_dir: str) -> str:
    model, tok = load_lora_model(cfg)
    set_adapter_arrays(model, arrays)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir
