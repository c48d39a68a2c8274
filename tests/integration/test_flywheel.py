"""Data flywheel, on a real cluster: workflow runs whose agent (driven by a scripted chat
model through the real tool-calling loop) called real tools export to JSONL rows that
render through lumos-tiny's chat template and parse back into the same conversation."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from lumos_ray import Agent, AgentStep, Workflow, start_run, wait_run
from lumos_ray.finetune import export_dataset, load_examples, load_tokenizer, set_run_score
from lumos_ray.finetune._data import render_chat_segments
from lumos_ray.store import open_store
from lumos_ray.testing import ScriptedModel, call_tool, reply

pytestmark = pytest.mark.usefixtures("ray_cluster")

_TURN = re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>\n", re.S)
_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)
_RESULT = re.compile(r"^<tool_response>\n(.*)\n</tool_response>$", re.S)


def parse_rendered(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A ChatML + hermes rendering back into (messages, tools): what a reader of the
    rendered text (the model, or vLLM's hermes tool parser) sees."""
    messages: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] = []
    turns = _TURN.findall(text)
    assert "".join(f"<|im_start|>{r}\n{c}<|im_end|>\n" for r, c in turns) == text
    for role, content in turns:
        if role == "system" and "<tools>" in content:
            head, _, rest = content.partition("You may call functions. Available tools:\n<tools>\n")
            listing = rest.split("</tools>")[0]
            tools = [json.loads(line) for line in listing.splitlines() if line.strip()]
            if head.strip():
                messages.append({"role": "system", "content": head.removesuffix("\n\n")})
        elif role == "user" and _RESULT.match(content):
            messages.append({"role": "tool", "content": _RESULT.match(content).group(1)})  # type: ignore[union-attr]
        elif role == "assistant" and _CALL.search(content):
            calls = [json.loads(c) for c in _CALL.findall(content)]
            text_part = _CALL.sub("", content)
            messages.append(
                {"role": "assistant", "content": text_part or None, "tool_calls": calls}
            )
        else:
            messages.append({"role": role, "content": content})
    return messages, tools


def _comparable(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Exported messages as the rendering can show them (tool-call ids are not
    rendered; arguments compare as JSON)."""
    out = []
    for m in messages:
        if m.get("tool_calls"):
            calls = [
                {"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
                for c in m["tool_calls"]
            ]
            out.append({"role": "assistant", "content": m["content"], "tool_calls": calls})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    return out


def _agent(a: int, b: int) -> Agent:
    model = ScriptedModel(
        [
            call_tool("calculator", expression=f"{a} * {b}"),
            call_tool("unit_convert", value=a, from_unit="km", to_unit="m"),
            reply(f"{a} * {b} = {a * b}, and {a} km is {a * 1000} m."),
        ]
    )
    return Agent(
        name="calc",
        instructions="Answer with the tools' results.",
        model=model,
        tools=["calculator", "unit_convert"],
    )


async def test_runs_with_tool_calls_export_and_round_trip_through_the_template(
    tmp_path: Path,
) -> None:
    from lumos_ray.models import tiny_model_path

    ids = []
    for a, b in [(12, 7), (3, 9)]:
        wf = Workflow(
            name="flywheel-roundtrip",
            agents=[_agent(a, b)],
            steps=[AgentStep(agent="calc", id="ask")],
        )
        run_id = await start_run(wf, f"what is {a} times {b}, and {a} km in m?")
        info = await wait_run(run_id, timeout=120)
        assert info.status == "succeeded", info
        ids.append(run_id)
    store = open_store()
    set_run_score(store, ids[1], 0.1)
    set_run_score(store, ids[0], 0.9)

    out = tmp_path / "runs.jsonl"
    stats = export_dataset(out, store, workflow="flywheel-roundtrip", min_score=0.5)
    assert stats.rows == 1 and stats.skipped_score == 1, stats
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    roles = [m["role"] for m in row["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    # The tools really ran: their results are in the thread.
    assert row["messages"][3]["content"] == "84"
    assert json.loads(row["messages"][5]["content"])["value"] == 12000
    assert {t["function"]["name"] for t in row["tools"]} == {"calculator", "unit_convert"}

    # The loader accepts the row and the template renders it; parsing the rendering
    # gives back the same conversation, tool calls and tools.
    (ex,), _ = load_examples(out)
    tok = load_tokenizer(str(tiny_model_path()))
    pieces = render_chat_segments(list(ex.messages or ()), list(ex.tools or ()), tok)
    assert pieces is not None
    text = "".join(p for p, _ in pieces)
    messages, tools = parse_rendered(text)
    assert tools == row["tools"]
    assert messages == _comparable(row["messages"])
    learnt = [p for p, learn in pieces if learn]
    assert learnt[0].startswith('<tool_call>{"name": "calculator"')
    assert learnt[-1] == f"{row['messages'][-1]['content']}<|im_end|>\n"


# -- the whole flywheel through the real gateway (vLLM) -------------------------------
_QUESTION = re.compile(r"What is (\d+) times (\d+)\?")
_INSTRUCTIONS = "Answer with the calculator."


def teacher(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
    """A scripted teacher: calls the calculator for the question, then answers with
    the tool's result (a FunctionModel, so one agent serves every run)."""
    if messages[-1]["role"] == "tool":
        return reply(f"The answer is {messages[-1]['content']}.")
    a, b = _QUESTION.search(messages[-1]["content"]).groups()  # type: ignore[union-attr]
    return call_tool("calculator", expression=f"{a} * {b}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tasks(path: Path, pairs: list[tuple[int, int]]) -> Path:
    from lumos_ray.tools import get_tool

    schema = get_tool("calculator").openai_schema()
    rows = [
        {
            "messages": [
                {"role": "system", "content": _INSTRUCTIONS},
                {"role": "user", "content": f"What is {a} times {b}?"},
            ],
            "tools": [schema],
            "expected": {"name": "calculator", "arguments": {"expression": f"{a} * {b}"}},
        }
        for a, b in pairs
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
async def test_flywheel_adapter_beats_the_base_through_the_gateway(tmp_path: Path) -> None:
    import asyncio as aio
    import random

    from lumos_ray import serve as lserve
    from lumos_ray.finetune import FlywheelSpec, run_flywheel
    from lumos_ray.models import tiny_model_path
    from lumos_ray.serve import GatewayConfig, ServeConfig, ServedEmbeddingConfig
    from lumos_ray.testing import FunctionModel

    rng = random.Random(7)
    pairs = [(rng.randint(2, 99), rng.randint(2, 99)) for _ in range(52)]
    train, held_out = pairs[:40], pairs[40:]
    agent = Agent(
        name="calc-teacher",
        instructions=_INSTRUCTIONS,
        model=FunctionModel(teacher),
        tools=["calculator"],
    )
    wf = Workflow(
        name="flywheel-teacher", agents=[agent], steps=[AgentStep(agent="calc-teacher", id="ask")]
    )
    run_ids = [await start_run(wf, f"What is {a} times {b}?") for a, b in train]
    infos = await aio.gather(*(wait_run(r, timeout=300) for r in run_ids))
    assert all(i.status == "succeeded" for i in infos)

    registry = tmp_path / "adapters"
    registry.mkdir()
    app = "lumos-serve-flywheel"
    cfg = ServeConfig(
        app_name=app,
        gateway=GatewayConfig(port=_free_port()),
        embeddings=ServedEmbeddingConfig(enabled=False),
        adapters_dir=str(registry),
    )
    url = await aio.to_thread(lserve.start, cfg, timeout_s=900)
    try:
        spec = FlywheelSpec(
            name="calc-flywheel",
            base_model=str(tiny_model_path()),
            gateway_url=url,
            tasks_path=str(_tasks(tmp_path / "held_out.jsonl", held_out)),
            dataset_path=str(tmp_path / "data.jsonl"),
            export={"workflow": "flywheel-teacher", "require_tool_calls": True},
            job={
                "lora": {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "r": 16},
                "optimizer": {"lr": 1e-2, "schedule": "constant"},
                "training": {"max_steps": 60, "batch_size": 8, "seq_len": 768},
                "output": {"storage_dir": str(tmp_path / "runs"), "registry_dir": str(registry)},
            },
        )
        res = await aio.to_thread(run_flywheel, spec)
    finally:
        await aio.to_thread(lserve.stop, app)
    print(res.table, res.stages)
    assert res.export is not None and res.export["rows"] == 40
    base, tuned = res.base["rates"], res.adapter["rates"]
    # Served without a restart: the gateway listed it while running, and it answered.
    assert res.adapter["errors"] == 0
    assert tuned["right_tool"] >= 0.8 and base["right_tool"] <= 0.2, res.table
    assert tuned["args_valid"] >= base["args_valid"] + 0.5, res.table
