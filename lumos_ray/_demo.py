"""`lumos demo`: the main job on the embedded default, end to end.

Starts a local Ray cluster, serves the demo model ``lumos-tiny-tools`` with vLLM
(hermes tool parser) behind the OpenAI gateway, and runs a durable workflow in which
one agent, offered the real ``calculator`` and ``date_diff`` tools, answers three
questions in parallel, tool steps compute the expected results with the same tools,
and a last step checks each answer. The questions (``models._tasks.demo_tasks``) use
phrasings the model was taught with numbers it never saw in training.

Why a check inside the workflow: a newcomer should see at once whether the agent
worked, not judge free text. ``--test-model`` swaps the served model for the scripted
teacher that taught it (no vLLM, seconds).
"""

from __future__ import annotations

import asyncio
from typing import Any

from lumos_ray import Agent, FunctionStep, ParallelStep, ToolStep, Workflow
from lumos_ray.actors.models import ChatModel, ModelConfig, OpenAIChatModel
from lumos_ray.models._tasks import (
    DEMO_INSTRUCTIONS,
    DEMO_TOOLS,
    ToolTask,
    answer_names_result,
    demo_tasks,
    result_value,
)

__all__ = ["build_demo_workflow", "demo_tasks", "run_demo", "teacher_reply"]


async def teacher_reply(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
    """``--test-model``: the scripted teacher that taught the demo model, on the demo's
    questions (what a perfectly trained model would answer)."""
    from lumos_ray.models._teacher import TeacherModel

    return await TeacherModel(demo_tasks()).chat(messages, tools)


def check_answers(state: dict[str, Any], questions: list[str]) -> dict[str, Any]:
    """Each answer next to the result the real tool gives; correct when it contains it."""
    rows = []
    for i, question in enumerate(questions):
        answer = state[f"ask_{i}"] or ""
        expected = state[f"expect_{i}"]
        value = result_value(expected)
        rows.append(
            {
                "question": question,
                "answer": answer,
                "tool_result": value,
                "correct": answer_names_result(answer, value),
            }
        )
    return {"answers": rows, "correct": sum(r["correct"] for r in rows), "of": len(rows)}


def build_demo_workflow(model: ChatModel | ModelConfig, tasks: list[ToolTask]) -> Workflow:
    assistant = Agent(
        name="demo-assistant",
        instructions=DEMO_INSTRUCTIONS,
        model=model,
        tools=list(DEMO_TOOLS),
        max_steps=3,
    )
    asks = [
        {"id": f"ask_{i}", "agent": "demo-assistant", "input": f"{{{{ input.questions[{i}] }}}}"}
        for i in range(len(tasks))
    ]
    expects = [
        ToolStep(id=f"expect_{i}", tool=t.tool, args=dict(t.arguments)) for i, t in enumerate(tasks)
    ]
    return Workflow(
        name="demo",
        description="One agent answers three questions in parallel with tools; "
        "tool steps compute the expected results; a function step checks the answers.",
        input_schema={
            "type": "object",
            "required": ["questions"],
            "properties": {
                "questions": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": len(tasks),
                    "maxItems": len(tasks),
                }
            },
        },
        agents=[assistant],
        steps=[
            ParallelStep(id="work", parallel=[*asks, *expects]),
            FunctionStep(
                id="check",
                function=check_answers,
                args={"state": "{{ state }}", "questions": "{{ input.questions }}"},
            ),
        ],
        output="{{ state.check }}",
    )


def run_demo(*, use_test_model: bool = False) -> dict[str, Any]:
    """Run the demo; returns the run's info and events."""
    from lumos_ray import runtime
    from lumos_ray.workflows._runs import follow_run, get_run, start_run

    tasks = demo_tasks()
    runtime.connect()
    model: ChatModel | ModelConfig
    if use_test_model:
        # By reference (durable runs store model config, never objects).
        model = ModelConfig(provider="function", function=f"{__name__}:teacher_reply")
        base_url = None
        served = None
    else:
        from lumos_ray import serve
        from lumos_ray.models import TOOLS_MODEL_NAME, tools_model_path

        base_url = serve.start(_serve_config(str(tools_model_path())))
        served = TOOLS_MODEL_NAME
        model = OpenAIChatModel(TOOLS_MODEL_NAME, base_url, extra_body={"max_tokens": 64})
    wf = build_demo_workflow(model, tasks)

    async def go() -> dict[str, Any]:
        run_id = await start_run(wf, {"questions": [t.prompt for t in tasks]})
        events = [e.model_dump() async for e in follow_run(run_id)]
        info = await get_run(run_id)
        return {"run": info.model_dump(), "events": events, "gateway": base_url, "model": served}

    return asyncio.run(go())


def _serve_config(model_dir: str) -> Any:
    """The default serve config with the demo model in place of lumos-tiny, and no
    embeddings deployment (the demo does not use it; one engine starts sooner)."""
    from lumos_ray.models import TOOLS_MODEL_NAME
    from lumos_ray.serve import ServeConfig
    from lumos_ray.serve._config import LoraSettings, ServedEmbeddingConfig, ServedModelConfig

    model = ServedModelConfig(
        name=TOOLS_MODEL_NAME, source=model_dir, lora=LoraSettings(enabled=False)
    )
    return ServeConfig(models=[model], embeddings=ServedEmbeddingConfig(enabled=False))
