"""Flywheel benchmark: tool-call accuracy of lumos-tiny before and after one turn of
the data flywheel, training tokens/s and the time of each stage, in one run.

What runs (all real): N workflow runs of a teacher agent (a shipped FunctionModel that
calls the real calculator tool, driven by the agent loop) -> ``export`` -> a LoRA job
on Ray Train -> the adapter registered and hot-loaded by the running gateway (vLLM,
hermes tool parser) -> base vs adapter on held-out questions (unseen numbers) through
the gateway. Optionally a third model (e.g. H4's demo model, lumos-tiny-tools) served
at another endpoint is scored on the same tasks (--demo-url/--demo-model).

    # from the repository root (the teacher is stored as benchmarks.flywheel:teacher)
    VLLM_CPU_KVCACHE_SPACE=1 HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 \\
        .venv/bin/python benchmarks/flywheel.py --train 40 --held-out 12 --steps 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_QUESTION = re.compile(r"What is (\d+) times (\d+)\?")
INSTRUCTIONS = "Answer with the calculator."


def teacher(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
    from lumos_ray.testing import call_tool, reply

    if messages[-1]["role"] == "tool":
        return reply(f"The answer is {messages[-1]['content']}.")
    m = _QUESTION.search(messages[-1]["content"])
    assert m is not None
    return call_tool("calculator", expression=f"{m.group(1)} * {m.group(2)}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_tasks(path: Path, pairs: list[tuple[int, int]]) -> Path:
    from lumos_ray.tools import get_tool

    schema = get_tool("calculator").openai_schema()
    with open(path, "w") as f:
        for a, b in pairs:
            f.write(
                json.dumps(
                    {
                        "messages": [
                            {"role": "system", "content": INSTRUCTIONS},
                            {"role": "user", "content": f"What is {a} times {b}?"},
                        ],
                        "tools": [schema],
                        "expected": {
                            "name": "calculator",
                            "arguments": {"expression": f"{a} * {b}"},
                        },
                        "tool_result": str(a * b),
                        "answer": str(a * b),
                    }
                )
                + "\n"
            )
    return path


async def _teacher_runs(pairs: list[tuple[int, int]]) -> float:
    from benchmarks.flywheel import teacher as importable_teacher  # stored as an import path
    from lumos_ray import Agent, AgentStep, Workflow, start_run, wait_run
    from lumos_ray.testing import FunctionModel

    agent = Agent(
        name="calc-teacher",
        instructions=INSTRUCTIONS,
        model=FunctionModel(importable_teacher),
        tools=["calculator"],
    )
    wf = Workflow(
        name="flywheel-bench", agents=[agent], steps=[AgentStep(agent="calc-teacher", id="ask")]
    )
    t0 = time.perf_counter()
    ids = [await start_run(wf, f"What is {a} times {b}?") for a, b in pairs]
    infos = await asyncio.gather(*(wait_run(r, timeout=600) for r in ids))
    bad = [i.id for i in infos if i.status != "succeeded"]
    if bad:
        raise SystemExit(f"teacher runs failed: {bad[:5]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--train", type=int, default=40, help="teacher runs (training rows)")
    ap.add_argument("--held-out", type=int, default=12, help="held-out tasks")
    ap.add_argument("--steps", type=int, default=60, help="LoRA optimizer steps")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--demo-url", default=None, help="endpoint serving a third model")
    ap.add_argument("--demo-model", default=None, help="its served name")
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    args = ap.parse_args()

    from lumos_ray import runtime
    from lumos_ray import serve as lserve
    from lumos_ray.finetune import (
        FlywheelSpec,
        evaluate_tool_calls,
        format_reports,
        load_tasks,
        run_flywheel,
    )
    from lumos_ray.models import tiny_model_path
    from lumos_ray.serve import GatewayConfig, ServeConfig, ServedEmbeddingConfig

    rng = random.Random(args.seed)
    pairs = [(rng.randint(2, 99), rng.randint(2, 99)) for _ in range(args.train + args.held_out)]
    work = Path(tempfile.mkdtemp(prefix="lumos-flywheel-bench-"))
    registry = work / "adapters"
    registry.mkdir()
    # Logical CPUs as the integration tests use: the vLLM replica, the gateway and the
    # teacher agent hold CPUs, and Ray Train's workers must still be schedulable (with
    # the 2 real cores as logical CPUs the job waited for resources forever).
    from lumos_ray.config import LumosSettings

    runtime.connect(settings=LumosSettings.from_env(num_cpus=8))
    app = "lumos-serve-flywheel-bench"
    try:
        runs_s = asyncio.run(_teacher_runs(pairs[: args.train]))
        t0 = time.perf_counter()
        url = lserve.start(
            ServeConfig(
                app_name=app,
                gateway=GatewayConfig(port=_free_port()),
                embeddings=ServedEmbeddingConfig(enabled=False),
                adapters_dir=str(registry),
            ),
            timeout_s=1200,
        )
        serve_start_s = time.perf_counter() - t0
        tasks_path = _write_tasks(work / "held_out.jsonl", pairs[args.train :])
        spec = FlywheelSpec(
            name="calc-flywheel",
            base_model=str(tiny_model_path()),
            gateway_url=url,
            tasks_path=str(tasks_path),
            dataset_path=str(work / "data.jsonl"),
            export={"workflow": "flywheel-bench", "require_tool_calls": True},
            job={
                "lora": {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "r": 16},
                "optimizer": {"lr": 1e-2, "schedule": "constant"},
                "training": {"max_steps": args.steps, "batch_size": 8, "seq_len": 768},
                "output": {"storage_dir": str(work / "runs"), "registry_dir": str(registry)},
            },
        )
        res = run_flywheel(spec, log=lambda line: None)
        table = res.table
        if args.demo_url and args.demo_model:
            demo = asyncio.run(
                evaluate_tool_calls(args.demo_url, args.demo_model, load_tasks(tasks_path))
            )
            from lumos_ray.finetune import EvalReport

            base = EvalReport(**{k: v for k, v in res.base.items() if k != "rates"})
            tuned = EvalReport(**{k: v for k, v in res.adapter.items() if k != "rates"})
            table = format_reports([base, tuned, demo])
    finally:
        try:
            lserve.stop(app)
        finally:
            runtime.shutdown()
    metrics = res.training.get("metrics") or {}
    out = {
        "teacher_runs": args.train,
        "held_out": args.held_out,
        "steps": args.steps,
        "teacher_runs_s": round(runs_s, 1),
        "serve_start_s": round(serve_start_s, 1),
        "stages_s": res.stages,
        "train_tokens_per_s": metrics.get("tokens_per_s"),
        "base": res.base["rates"],
        "adapter": res.adapter["rates"],
        "adapter_failures": res.adapter["failures"][:3],
    }
    print(table)
    print(json.dumps(out, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps({**out, "table": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
