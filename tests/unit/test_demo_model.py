"""lumos-tiny-tools without Ray: the task split, the tokenizer, the teacher, the rows.

The from-scratch retrain through the fine-tuning job is in
tests/integration/test_demo_model.py.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from lumos_ray.errors import ModelError
from lumos_ray.models._tasks import (
    _CONVERSIONS,
    _CORES,
    _LEADS,
    _N_HELD_LEADS,
    _N_HELD_TAILS,
    _TAILS,
    DEMO_INSTRUCTIONS,
    DEMO_TOOLS,
    answer_for,
    make_tasks,
)
from lumos_ray.models._teacher import TeacherModel
from lumos_ray.models._transcripts import thread_to_row


def _drawn(task) -> set[str]:
    """The operands or dates the generator drew for a task (not a conversion factor,
    not a product it computed)."""
    if task.tool == "date_diff":
        return {task.arguments["start"], task.arguments["end"]}
    a, _, b = task.arguments["expression"].split(" ")
    if task.kind == "convert":
        return {a}
    if task.kind == "div":
        return {b, str(int(a) // int(b))}
    return {a, b}


def test_heldout_operands_and_dates_never_occur_in_training() -> None:
    seen = set().union(*(_drawn(t) for t in make_tasks(3000, "train")))
    for t in make_tasks(400, "heldout"):
        assert not (_drawn(t) & seen), (t, _drawn(t) & seen)


def test_heldout_prompts_have_a_phrasing_part_training_never_uses() -> None:
    train_prompts = {t.prompt for t in make_tasks(3000, "train")}
    reserved = (
        [c[-1].split("{")[0] for c in _CORES.values()]
        + [_CONVERSIONS[-1][0].split("{")[0]]
        + [x for x in _LEADS[-_N_HELD_LEADS:]]
        + [x for x in _TAILS[-_N_HELD_TAILS:]]
    )
    for p in train_prompts:
        assert not any(r and r in p for r in reserved), p
    for t in make_tasks(400, "heldout"):
        assert "phrasing" in t.novelty
        assert t.prompt not in train_prompts
        assert any(r and r in t.prompt for r in reserved), t.prompt


def test_training_prompts_wrap_the_question_in_varied_text() -> None:
    # A few fixed lead-ins let a small model learn where the numbers sit; an unseen one
    # then derails the copy. Training prompts carry random words around the question
    # (the reserved held-out parts never: the test above).
    words = {w for t in make_tasks(3000, "train") for w in t.prompt.split() if w.isalpha()}
    assert len(words) > 300, len(words)


def test_training_draws_day_counts_twice_as_often_and_heldout_draws_kinds_evenly() -> None:
    from collections import Counter

    train = Counter(t.kind for t in make_tasks(7000, "train"))
    held = Counter(t.kind for t in make_tasks(6000, "heldout"))
    others = [n for k, n in train.items() if k != "days"]
    # 2 in 7 training tasks are day counts, 1 in 7 each of the other five kinds.
    assert 1.7 < train["days"] / (sum(others) / len(others)) < 2.3, train
    assert all(800 < n < 1200 for n in held.values()) and len(held) == 6, held


def test_training_dates_are_too_many_to_learn_by_heart() -> None:
    # With only the training four-fifths of 2024-2029 every date came back ~6 times and
    # the model learnt dates by heart instead of copying them (it copied no date of
    # 2030). Training day counts draw from six-year blocks over 1988-2071 (held-out
    # dates stay out: the disjointness test above), so a date rarely comes back.
    from collections import Counter

    days = [t for t in make_tasks(7000, "train") if t.kind == "days"]
    dates = Counter(d for t in days for d in t.arguments.values())
    assert max(dates.values()) <= 5 and len(dates) > 1.5 * len(days), dates.most_common(3)
    years = {int(d[:4]) for d in dates}
    assert min(years) < 2000 and max(years) > 2060 and {2024, 2029} <= years
    # Both dates of a prompt lie within one six-year block, like held-out ones.
    assert all(int(t.arguments["end"][:4]) - int(t.arguments["start"][:4]) <= 5 for t in days)


def test_tasks_are_deterministic_and_their_calls_run_on_the_real_tools() -> None:
    from lumos_ray.tools import get_tool

    a, b = make_tasks(50, "heldout", seed=3), make_tasks(50, "heldout", seed=3)
    assert a == b
    for t in a:
        result = get_tool(t.tool).call(t.arguments)
        assert answer_for(t, result).startswith(("The answer is ", "There are "))


def test_tokenizer_cuts_numbers_into_known_digit_pairs_and_keeps_turn_headers_apart() -> None:
    from lumos_ray.models._tools_base import train_tools_tokenizer

    tok = train_tools_tokenizer()
    pieces = [tok.decode([i]) for i in tok.encode("482 * 17 = 8194", add_special_tokens=False)]
    assert [p for p in pieces if any(c.isdigit() for c in p)] == ["48", "2", "17", "81", "94"]
    date = [tok.decode([i]) for i in tok.encode("on 2025-08-12.", add_special_tokens=False)]
    assert [p for p in date if any(c.isdigit() for c in p)] == ["20", "25", "08", "12"]
    # Every pair is one token, so a held-out number is made of tokens training saw.
    assert all(len(tok.encode(f"{i:02d}", add_special_tokens=False)) == 1 for i in range(100))
    # The generation prompt ends with the assistant header; the answer must start a new
    # token there, exactly as in the training text.
    full = tok.encode("<|im_start|>assistant\nThe answer is 5.", add_special_tokens=False)
    head = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
    assert full[: len(head)] == head


def _msgs(prompt: str) -> list[dict]:
    return [{"role": "system", "content": DEMO_INSTRUCTIONS}, {"role": "user", "content": prompt}]


def test_teacher_calls_the_tasks_tool_then_answers_from_the_result() -> None:
    from lumos_ray.models._tools_base import tool_specs

    task = make_tasks(1, "train")[0]
    teacher = TeacherModel([task])
    specs = tool_specs(DEMO_TOOLS)
    first = asyncio.run(teacher.chat(_msgs(task.prompt), specs))
    assert [(c.name, json.loads(c.arguments)) for c in first.tool_calls] == [
        (task.tool, task.arguments)
    ]
    history = [
        *_msgs(task.prompt),
        first.to_message(),
        {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": "1234"},
    ]
    second = asyncio.run(teacher.chat(history, specs))
    assert second.content == "The answer is 1234." and not second.tool_calls


def test_teacher_refuses_prompts_it_was_not_given_and_missing_tools() -> None:
    task = make_tasks(1, "train")[0]
    with pytest.raises(ModelError, match="only answers the generated tasks"):
        asyncio.run(TeacherModel([task]).chat(_msgs("What is love?"), []))
    with pytest.raises(ModelError, match="does not offer"):
        asyncio.run(TeacherModel([task]).chat(_msgs(task.prompt), []))


def test_thread_rows_have_openai_chat_with_tools_shape() -> None:
    history = [
        {"role": "user", "content": "What is 2 plus 3?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression": "2 + 3"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "5"},
        {"role": "assistant", "content": "The answer is 5."},
    ]
    row = thread_to_row(history, "sys", [{"type": "function", "function": {"name": "x"}}])
    assert [m["role"] for m in row["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    assert row["messages"][2]["tool_calls"][0]["function"]["name"] == "calculator"
    assert row["messages"][3]["tool_call_id"] == "c1"
    assert row["tools"][0]["function"]["name"] == "x"
