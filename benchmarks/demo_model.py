"""Tool-call accuracy of the demo model vs base lumos-tiny, side by side through vLLM.

Both models are served in ONE Serve app (one vLLM engine each, hermes tool parser),
and the same held-out tasks (operands, dates and phrasings never seen in training)
go to each through the OpenAI gateway. Also prints how the demo model was trained
(training seconds, tokens/s) from its build record.

    .venv/bin/python benchmarks/demo_model.py [--tasks 200] [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import tempfile
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--model-dir", default=None, help="Default: the packaged lumos-tiny-tools.")
    ap.add_argument("--no-base", action="store_true", help="Skip base lumos-tiny.")
    args = ap.parse_args()
    os.environ.setdefault("LUMOS_HOME", tempfile.mkdtemp(prefix="lumos-bench-demo-"))
    if not args.no_base:
        # Each engine reserves one CPU of the embedded cluster: on a 2-core machine two
        # engines left none for the gateway replica, which then waited forever to be
        # scheduled. Accuracy, not speed, is measured here, so oversubscribing is fine.
        os.environ.setdefault("LUMOS_NUM_CPUS", str(max(4, os.cpu_count() or 1)))

    from lumos_ray import runtime, serve
    from lumos_ray.models import TINY_MODEL_NAME, TOOLS_MODEL_NAME, tools_model_path
    from lumos_ray.models._tasks import make_tasks
    from lumos_ray.models._tool_eval import evaluate_tool_calls
    from lumos_ray.serve import GatewayConfig, ServeConfig
    from lumos_ray.serve._config import LoraSettings, ServedEmbeddingConfig, ServedModelConfig

    model_dir = args.model_dir or str(tools_model_path())
    models = [
        ServedModelConfig(name=TOOLS_MODEL_NAME, source=model_dir, lora=LoraSettings(enabled=False))
    ]
    if not args.no_base:
        models.append(
            ServedModelConfig(
                name=TINY_MODEL_NAME, source=TINY_MODEL_NAME, lora=LoraSettings(enabled=False)
            )
        )
    cfg = ServeConfig(
        gateway=GatewayConfig(port=_free_port()),
        models=models,
        embeddings=ServedEmbeddingConfig(enabled=False),
    )
    runtime.connect()
    t0 = time.perf_counter()
    url = serve.start(cfg, timeout_s=900)
    print(f"serve app ready in {time.perf_counter() - t0:.0f} s at {url}")
    tasks = make_tasks(args.tasks, "heldout")
    try:
        rows = []
        for m in models:
            t0 = time.perf_counter()
            rep = asyncio.run(evaluate_tool_calls(url, m.name, tasks))
            d = rep.as_dict()
            d["eval_s"] = time.perf_counter() - t0
            rows.append(d)
    finally:
        serve.stop(cfg.app_name)
        runtime.shutdown()
    build_file = os.path.join(model_dir, "lumos_build.json")
    build = json.load(open(build_file)) if os.path.exists(build_file) else {}
    print(f"\nheld-out tasks: {args.tasks} (unseen operands/dates and phrasings)")
    print(f"{'model':<18} {'call ok':>8} {'tool ok':>8} {'format':>8} {'answer':>8} {'eval s':>7}")
    for d in rows:
        print(
            f"{d['model']:<18} {d['call_accuracy']:>8.1%} {d['tool_name_accuracy']:>8.1%} "
            f"{d['format_accuracy']:>8.1%} {d['answer_accuracy']:>8.1%} {d['eval_s']:>7.0f}"
        )
    for d in rows:
        print(f"{d['model']} by kind: {json.dumps(d['by_kind'])}")
        print(f"{d['model']} answer by kind: {json.dumps(d['answer_by_kind'])}")
        for f in d["failures"][:3]:
            print("  miss:", json.dumps(f)[:300])
    if build:
        keys = (
            "params",
            "tasks",
            "steps",
            "batch",
            "train_seconds",
            "train_tokens_per_s",
            "tokens_seen",
            "teacher_runs_s",
            "finetune_s",
            "eval_loss",
            "base_eval_loss",
        )
        print("demo model build:", json.dumps({k: build.get(k) for k in keys}, default=str))


if __name__ == "__main__":
    main()
