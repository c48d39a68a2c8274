"""`lumos demo`: the main job on the embedded default, end to end.

Starts a local Ray cluster, serves lumos-tiny with vLLM behind the OpenAI gateway,
and runs a workflow in which three agent actors write in parallel through the
gateway, a tool step computes, a map step fans out over the drafts, and the run is
durable (checkpointed in the store; see `lumos runs show`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from lumos_ray import (
    Agent,
    FunctionStep,
    MapStep,
    ParallelStep,
    ToolStep,
    Workflow,
)
from lumos_ray.actors.models import ChatModel, ModelConfig, OpenAIChatModel

__all__ = ["build_demo_workflow", "run_demo"]

ANGLES = ("history", "design", "risks")


def draft_stats(text: str | None) -> dict[str, Any]:
    words = (text or "").split()
    return {"words": len(words), "chars": len(text or "")}


def summarise(state: dict[str, Any]) -> dict[str, Any]:
    return {
        "drafts": {a: state[f"draft_{a}"] for a in ANGLES},
        "stats": state["stats"],
        "tool_result": state["budget"],
    }


def build_demo_workflow(model: ChatModel | ModelConfig) -> Workflow:
    writer = Agent(
        name="demo-writer",
        instructions="You write one short paragraph about the topic and angle you are given.",
        model=model,
        max_steps=2,
        stream=True,
    )
    return Workflow(
        name="demo",
        description="Three agents draft in parallel; a tool and a map step post-process.",
        input_schema={
            "type": "object",
            "required": ["topic"],
            "properties": {"topic": {"type": "string"}},
        },
        agents=[writer],
        steps=[
            ParallelStep(
                id="drafts",
                parallel=[
                    *(
                        {
                            "id": f"draft_{a}",
                            "agent": "demo-writer",
                            "input": f"Topic: {{{{ input.topic }}}}. Angle: {a}.",
                        }
                        for a in ANGLES
                    ),
                    ToolStep(id="budget", tool="calculator", args={"expression": "3 * 512"}),
                ],
            ),
            MapStep(
                id="stats",
                map={
                    "over": "[" + ", ".join(f"state.draft_{a}" for a in ANGLES) + "]",
                    "step": FunctionStep(function=draft_stats, args={"text": "{{ item }}"}),
                },
            ),
            FunctionStep(id="summary", function=summarise),
        ],
        output="{{ state.summary }}",
    )


def run_demo(*, use_test_model: bool = False, topic: str = "Ray actors") -> dict[str, Any]:
    """Run the demo; returns the run's info and events."""
    from lumos_ray import runtime
    from lumos_ray.workflows._runs import follow_run, get_run, start_run

    runtime.connect()
    model: ChatModel | ModelConfig
    if use_test_model:
        # The shipped test model, by config (found through its entry point).
        model = ModelConfig(provider="test")
        base_url = None
    else:
        from lumos_ray import serve

        base_url = serve.start()
        model = OpenAIChatModel("lumos-tiny", base_url, extra_body={"max_tokens": 48})
    wf = build_demo_workflow(model)

    async def go() -> dict[str, Any]:
        run_id = await start_run(wf, {"topic": topic})
        events = [e.model_dump() async for e in follow_run(run_id)]
        info = await get_run(run_id)
        return {"run": info.model_dump(), "events": events, "gateway": base_url}

    return asyncio.run(go())
