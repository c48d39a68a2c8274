"""`lumos demo` without Ray: its questions, the answer check and the printed report.

The demo end to end (vLLM serving the committed lumos-tiny-tools) is
tests/integration/test_demo.py.
"""

from __future__ import annotations

import asyncio
import json

from lumos_ray._demo import build_demo_workflow, check_answers, demo_tasks, teacher_reply
from lumos_ray.actors.models import ModelConfig
from lumos_ray.cli._project import _demo_text
from lumos_ray.models._tasks import (
    _CONVERSIONS,
    _CORES,
    DEMO_TOOLS,
    _split_numbers,
    answer_names_result,
    make_tasks,
)


def test_demo_questions_use_taught_phrasings_with_held_out_numbers():
    tasks = demo_tasks()
    assert [t.kind for t in tasks] == ["mul", "convert", "sub"]
    assert tasks == demo_tasks()
    train_nums, held_nums = _split_numbers(0)
    parts = [t.arguments["expression"].split(" ") for t in tasks]
    operands = {int(p[0]) for p in parts}
    operands |= {int(p[2]) for p, t in zip(parts, tasks, strict=True) if t.kind != "convert"}
    assert len(operands) == 5
    assert operands <= set(held_nums) and not operands & set(train_nums)
    # The sentence itself is one training uses (only the numbers are new).
    mul, convert, sub = parts
    taught = {
        _CORES["mul"][0].format(a=mul[0], b=mul[2]),
        _CONVERSIONS[1][0].format(a=convert[0]),
        _CORES["sub"][0].format(a=sub[0], b=sub[2]),
    }
    assert {t.prompt for t in tasks} == taught
    assert convert[2] == str(_CONVERSIONS[1][1]) and int(sub[0]) > int(sub[2])
    assert not {t.prompt for t in make_tasks(8000, "train")} & taught


def test_an_answer_counts_only_when_it_names_the_whole_number():
    assert answer_names_result("The answer is 7953.", 7953)
    assert answer_names_result("There are 990 days.", {"days": 990, "weekdays": 707})
    assert answer_names_result("The answer is 51.0.", 51.0)
    assert not answer_names_result("The answer is 79531.", 7953)
    assert not answer_names_result("The answer is 17953.", 7953)
    assert not answer_names_result("The answer is 7953.5", 7953)
    assert not answer_names_result("The answer is 120.", 12)
    assert not answer_names_result("There are 707 days.", {"days": 990, "weekdays": 707})
    assert not answer_names_result("", 7953)


def test_check_reads_the_date_diff_result_and_counts_correct_answers():
    state = {
        "ask_0": "The answer is 12.",
        "expect_0": 12,
        "ask_1": "There are 5 days.",
        "expect_1": {"days": 4},
        "ask_2": None,
        "expect_2": 3,
    }
    out = check_answers(state, ["q0", "q1", "q2"])
    assert [r["correct"] for r in out["answers"]] == [True, False, False]
    assert out["answers"][1]["tool_result"] == 4
    assert (out["correct"], out["of"]) == (1, 3)


def test_the_workflow_asks_each_question_and_computes_each_expected_result_with_its_tool():
    tasks = demo_tasks()
    wf = build_demo_workflow(ModelConfig(provider="test"), tasks)
    (agent,) = wf.agents
    assert list(agent.tools) == list(DEMO_TOOLS)
    work = wf.steps[0]
    tools = {s.id: (s.tool, s.args) for s in work.parallel if getattr(s, "tool", None)}
    assert tools == {f"expect_{i}": (t.tool, t.arguments) for i, t in enumerate(tasks)}


def test_the_teacher_calls_the_right_tool_for_each_demo_question():
    from lumos_ray.models._tools_base import tool_specs

    specs = tool_specs(DEMO_TOOLS)
    for t in demo_tasks():
        resp = asyncio.run(teacher_reply([{"role": "user", "content": t.prompt}], specs))
        (call,) = resp.tool_calls
        assert (call.name, json.loads(call.arguments)) == (t.tool, t.arguments)


def test_the_report_shows_each_tool_call_and_marks_wrong_answers():
    run = {
        "id": "run-1",
        "status": "succeeded",
        "error": None,
        "output": {
            "answers": [
                {
                    "question": "Q zero",
                    "answer": "The answer is 6.",
                    "tool_result": 6,
                    "correct": True,
                },
                {
                    "question": "Q one",
                    "answer": "The answer is 7.",
                    "tool_result": 8,
                    "correct": False,
                },
            ],
            "correct": 1,
            "of": 2,
        },
    }
    events = [
        {
            "seq": 1,
            "type": "tool_call",
            "data": {
                "step": "0.work/0.ask_0",
                "tool": "calculator",
                "arguments": '{"expression": "2 * 3"}',
                "ok": True,
            },
        },
    ]
    text = _demo_text({"run": run, "events": events, "gateway": None})
    assert 'tool call: calculator({"expression": "2 * 3"})' in text
    assert "answer: The answer is 6.  [correct]" in text
    assert "(no tool call)" in text  # question 1 made none
    assert "WRONG (the tool says 8)" in text
    assert "1 of 2 answers correct" in text
