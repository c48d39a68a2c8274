"""The one served lumos-tiny app that every serving integration test shares.

Loaded as a pytest plugin (``pytest_plugins = ["tests.integration._served"]`` in each
test module that needs it), so its session-scoped fixture starts ONE Serve app (one
vLLM engine, the gateway with two API keys and a rate limit, embeddings) for the whole
run, however many modules use it: an engine costs 20-80 s to load on 2 cores. The
offline vLLM LoRA reference (a second engine, in a subprocess) is computed while the
app starts. The app is stopped at the end of the session.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

__all__ = [
    "BURST_KEY",
    "FUZZ_KEY",
    "KEY",
    "KEY_ENV",
    "MAX_TOKENS",
    "PROMPTS",
    "RPM",
    "SERVE_PROXY_ENV",
    "client",
    "free_port",
    "served",
]

KEY = "sk-lumos-test"
#: Agents in durable runs name their key by env var (runs never store a key). Set when
#: this plugin is imported, at collection, so the embedded test cluster, started later,
#: passes it on to every worker (its processes inherit the driver's environment).
KEY_ENV = "LUMOS_TEST_GATEWAY_KEY"
os.environ.setdefault(KEY_ENV, KEY)
BURST_KEY = "sk-lumos-burst"
#: Its own rate-limit bucket for the fuzzer, so fuzzing never throttles other tests.
FUZZ_KEY = "sk-lumos-fuzz"
#: The running Serve's HTTP proxy, when the shared app's fixture started Serve (its own
#: gateway is reached on its own port, not through the proxy).
SERVE_PROXY_ENV = "LUMOS_TEST_SERVE_PROXY"
RPM = 120
PROMPTS = ["The capital of France is", "Once upon a time there was a small robot"]
MAX_TOKENS = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_adapter(base: Path, out: Path, seed: int) -> Path:
    """A real peft LoRA adapter on lumos-tiny with random (non-zero) A and B."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    cfg = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        init_lora_weights=False,
    )
    get_peft_model(model, cfg).save_pretrained(out)
    return out


_OFFLINE = textwrap.dedent(
    """
    import json, sys
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    def main():
        model, prompts, adapters, max_tokens = json.loads(sys.argv[1])
        llm = LLM(model=model, dtype="float32", max_model_len=1024, enable_lora=True,
                  max_lora_rank=16, max_loras=2, max_num_seqs=8)
        sp = SamplingParams(temperature=0, max_tokens=max_tokens)
        out = {}
        for i, (name, path) in enumerate(adapters.items(), start=1):
            res = llm.generate(prompts, sp, lora_request=LoRARequest(name, i, path))
            out[name] = [list(r.outputs[0].token_ids) for r in res]
        print("RESULT " + json.dumps(out), flush=True)

    if __name__ == "__main__":
        main()
    """
)


@pytest.fixture(scope="session")
def served(ray_cluster: Any, lumos_home: str, tmp_path_factory: pytest.TempPathFactory):
    """Start the Serve app once; yield (base_url, ServeConfig, context)."""
    from lumos_ray import serve as lserve
    from lumos_ray.adapters import AdapterRegistry
    from lumos_ray.models import tiny_model_path
    from lumos_ray.serve import GatewayConfig, QuotaConfig, ServeConfig

    model_dir = tiny_model_path()
    work = tmp_path_factory.mktemp("serve")
    registry = AdapterRegistry(work / "adapters")
    a1 = _make_adapter(model_dir, work / "src-a1", seed=1)
    a2 = _make_adapter(model_dir, work / "src-a2", seed=2)
    registry.register("tiny-a1", a1, base_model="lumos-tiny")

    # vLLM's own offline LoRA output, computed while the app starts.
    script = work / "offline_lora.py"
    script.write_text(_OFFLINE)
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_CACHE_ROOT": str(work / "vllm-cache"),
    }
    arg = json.dumps([str(model_dir), PROMPTS, {"a1": str(a1), "a2": str(a2)}, MAX_TOKENS])
    offline = subprocess.Popen(
        [sys.executable, str(script), arg],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )

    cfg = ServeConfig(
        gateway=GatewayConfig(
            port=free_port(),
            api_keys=[KEY, BURST_KEY, FUZZ_KEY],
            max_body_bytes=64_000,
            quota=QuotaConfig(requests_per_minute=RPM),
        ),
        adapters_dir=str(registry.root),
    )
    assert cfg.gateway.direct_http, "the shared app is the default fast path: direct HTTP"
    # Its gateway replica serves HTTP itself, so Serve would start without its proxy;
    # later modules deploy gateway-only apps beside it, which need one: start Serve
    # first, its proxy on a port of its own, named for them in SERVE_PROXY_ENV.
    from lumos_ray.serve._app import _serve_running, _start_serve

    if not _serve_running():
        proxy_port = free_port()
        _start_serve(ServeConfig(gateway=GatewayConfig(port=proxy_port)))
        os.environ[SERVE_PROXY_ENV] = f"http://127.0.0.1:{proxy_port}"
    try:
        url = lserve.start(cfg, timeout_s=900)
        out, _ = offline.communicate(timeout=900)
    except BaseException:
        offline.kill()
        lserve.stop(cfg.app_name)
        raise
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"offline vLLM LoRA run failed:\n{out[-3000:]}"
    ctx = {
        "model_dir": model_dir,
        "registry": registry,
        "a2_src": a2,
        "offline_lora": json.loads(lines[-1][len("RESULT ") :]),
    }
    yield url, cfg, ctx
    lserve.stop(cfg.app_name)
    os.environ.pop(SERVE_PROXY_ENV, None)


@pytest.fixture(scope="session")
def client(served: Any) -> Iterator[httpx.Client]:
    url, _, _ = served
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=300) as c:
        yield c
