"""The tool-call evaluation harness against a real HTTP endpoint on 127.0.0.1 that
answers in the OpenAI chat shape (a stand-in model whose replies depend on the prompt:
the harness, not the model, is under test)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lumos_ray.errors import DatasetError, InputValidationError
from lumos_ray.finetune import evaluate_tool_calls, format_reports, load_tasks

CALC = {
    "type": "function",
    "function": {
        "name": "calculator",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
            "additionalProperties": False,
        },
    },
}
CONVERT = {"type": "function", "function": {"name": "unit_convert", "parameters": {}}}

# Replies by the user's prompt: (tool call name, arguments JSON) or plain text.
_PLAN: dict[str, Any] = {
    "q-right": ("calculator", '{"expression": "2+3"}'),
    "q-wrong-tool": ("unit_convert", "{}"),
    "q-bad-args": ("calculator", '{"expr": "2+3"}'),
    "q-other-args": ("calculator", '{"expression": "2+4"}'),
    "q-no-call": "I think it is 5.",
    "q-http-error": 500,
}


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *a: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        msgs = body["messages"]
        if msgs[-1]["role"] == "tool":  # second turn: answer with the result
            msg: dict[str, Any] = {
                "role": "assistant",
                "content": f"The answer is {msgs[-1]['content']}.",
            }
        else:
            plan = _PLAN[msgs[-1]["content"]]
            if plan == 500:
                self.send_response(500)
                self.end_headers()
                self.wfile.write(b"boom")
                return
            if isinstance(plan, str):
                msg = {"role": "assistant", "content": plan}
            else:
                msg = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": plan[0], "arguments": plan[1]},
                        }
                    ],
                }
        data = json.dumps({"choices": [{"index": 0, "message": msg}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _tasks(tmp_path: Path, prompts: list[str], answer: bool = False) -> Path:
    rows = []
    for p in prompts:
        row: dict[str, Any] = {
            "messages": [{"role": "user", "content": p}],
            "tools": [CALC, CONVERT],
            "expected": {"name": "calculator", "arguments": {"expression": "2+3"}},
        }
        if answer:
            row |= {"tool_result": "5", "answer": "5"}
        rows.append(row)
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_each_way_to_be_wrong_is_counted(endpoint: str, tmp_path: Path) -> None:
    tasks = load_tasks(_tasks(tmp_path, list(_PLAN)))
    r = asyncio.run(evaluate_tool_calls(endpoint, "m", tasks, concurrency=3, timeout_s=10))
    assert (r.tasks, r.called, r.right_tool, r.args_valid, r.args_exact, r.errors) == (
        6,
        4,  # right, wrong tool, bad args, other args
        3,  # all but the wrong tool
        2,  # bad args fail the schema (additionalProperties, required)
        1,  # only the exact one
        1,  # the HTTP 500
    )
    assert r.accuracy == pytest.approx(1 / 6)
    assert {f["task"].rsplit(":", 1)[1] for f in r.failures} == {"2", "3", "4", "5", "6"}


def test_second_turn_answer_is_checked(endpoint: str, tmp_path: Path) -> None:
    tasks = load_tasks(_tasks(tmp_path, ["q-right", "q-other-args"], answer=True))
    r = asyncio.run(evaluate_tool_calls(endpoint, "m", tasks))
    assert (r.answered, r.answer_right) == (2, 2)  # the stand-in echoes the tool result
    table = format_reports([r])
    assert "args exact" in table and "   1/2" in table


def test_bad_task_files_and_bounds_are_clear_errors(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text(
        json.dumps({"messages": [{"role": "user", "content": "x"}], "tools": [CALC]}) + "\n"
    )
    with pytest.raises(DatasetError, match=r"t.jsonl:1: 'expected' must be"):
        load_tasks(p)
    with pytest.raises(InputValidationError, match="concurrency"):
        asyncio.run(evaluate_tool_calls("http://127.0.0.1:9", "m", [], concurrency=0))


def test_an_unreachable_endpoint_scores_errors_not_a_crash(tmp_path: Path) -> None:
    tasks = load_tasks(_tasks(tmp_path, ["q-right"]))
    r = asyncio.run(evaluate_tool_calls("http://127.0.0.1:9", "m", tasks, timeout_s=5))
    assert (r.errors, r.args_exact) == (1, 0)


def test_an_answer_counts_only_when_the_expected_value_appears_whole() -> None:
    from lumos_ray.finetune._eval import answer_found

    assert answer_found("12", "The answer is 12.")
    assert answer_found("1200", "That makes 1,200 in total")
    assert answer_found("Paris", "It is paris, the capital.")
    assert not answer_found("12", "The answer is 120.")
    assert not answer_found("12", "The answer is 0.12")
    assert not answer_found("12", "It is 12.5")
    assert not answer_found("cat", "concatenate")
    assert not answer_found("", "anything")
