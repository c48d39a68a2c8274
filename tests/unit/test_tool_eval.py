"""The evaluation harness (``lumos_ray.models._tool_eval``) against a scripted
OpenAI-compatible server: a stdlib HTTP server that replies with the task's exact call
and then a chosen answer, so what is scored is the harness itself."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lumos_ray.models._tasks import make_tasks
from lumos_ray.models._tool_eval import evaluate_tool_calls


@contextmanager
def _server(answer: Callable[[Any], str]) -> Iterator[str]:
    """Replies to a prompt with the task's exact call; to a tool result with
    ``answer(result)`` as text."""
    by_prompt = {t.prompt: t for t in make_tasks(12, "heldout")}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            last = body["messages"][-1]
            if last["role"] == "user":
                t = by_prompt[last["content"]]
                fn = {"name": t.tool, "arguments": json.dumps(t.arguments)}
                msg = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c", "type": "function", "function": fn}],
                }
            else:
                msg = {"role": "assistant", "content": answer(json.loads(last["content"]))}
            data = json.dumps({"choices": [{"index": 0, "message": msg}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    finally:
        srv.shutdown()
        srv.server_close()


def _value(result: Any) -> Any:
    return result["days"] if isinstance(result, dict) else result


def test_an_answer_counts_when_it_states_the_tools_result() -> None:
    tasks = make_tasks(12, "heldout")
    with _server(lambda r: f"The answer is {_value(r)}.") as url:
        rep = asyncio.run(evaluate_tool_calls(url, "m", tasks, concurrency=4))
    assert (rep.call_ok, rep.tool_ok, rep.answer_ok) == (12, 12, 12)
    assert sum(n for _, n in rep.answer_by_kind.values()) == 12
    assert all(ok == n for ok, n in rep.answer_by_kind.values())


def test_an_answer_with_the_result_as_a_prefix_of_another_number_is_wrong() -> None:
    # "120" is not 12: the harness once counted it (a substring test of "The answer is 12").
    tasks = make_tasks(12, "heldout")
    with _server(lambda r: f"The answer is {_value(r)}0.") as url:
        rep = asyncio.run(evaluate_tool_calls(url, "m", tasks, concurrency=4))
    assert rep.call_ok == 12 and rep.answer_ok == 0
    assert all(ok == 0 for ok, _ in rep.answer_by_kind.values())
