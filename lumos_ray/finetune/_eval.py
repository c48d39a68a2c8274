"""Tool-call accuracy of any served model, through its OpenAI-compatible endpoint.

Why through the endpoint: what counts is what a deployed model does when an agent
offers it tools, as parsed by the server (vLLM's tool parser, the gateway); scoring
logits offline would skip the template, the parser and the adapter loading that serve
it. The same harness scores a base model, an adapter (``model`` = the adapter's served
name) and the demo model, so the flywheel and ``benchmarks/`` compare like with like.

A task set is JSONL, one task a line::

    {"messages": [...], "tools": [...],
     "expected": {"name": "calculator", "arguments": {"expression": "12*7"}},
     "tool_result": "84",          # optional: the second turn's tool message
     "answer": "84"}               # optional: must appear in the final answer

Per task: did the model call a tool, the right one, with arguments that are valid
JSON matching the tool's JSON Schema, equal to the expected arguments; and, when the
task has ``answer`` (and ``tool_result``), does the answer after the tool result
contain it. Requests run with bounded concurrency, each with a timeout; a failed
request scores the task as wrong and is counted, never an exception mid-report.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lumos_ray.errors import DatasetError, InputValidationError

__all__ = ["EvalReport", "EvalTask", "evaluate_tool_calls", "format_reports", "load_tasks"]

MAX_TASKS = 10_000
MAX_CONCURRENCY = 64


@dataclass(frozen=True)
class EvalTask:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    expected_name: str
    expected_arguments: dict[str, Any] | None
    tool_result: str | None = None
    answer: str | None = None
    source: str = ""


@dataclass
class EvalReport:
    """Counts and rates for one model over one task set."""

    model: str
    tasks: int = 0
    called: int = 0
    right_tool: int = 0
    args_valid: int = 0
    args_exact: int = 0
    answered: int = 0  # tasks with an expected answer
    answer_right: int = 0
    errors: int = 0  # requests that failed (timeouts, HTTP errors)
    seconds: float = 0.0
    failures: list[dict[str, Any]] = field(default_factory=list)  # first few, for reading

    def rate(self, key: str) -> float:
        denom = self.answered if key == "answer_right" else self.tasks
        return getattr(self, key) / denom if denom else 0.0

    @property
    def accuracy(self) -> float:
        """Right tool with exactly the expected arguments: the headline number."""
        return self.rate("args_exact")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rates"] = {
            k: round(self.rate(k), 4)
            for k in ("called", "right_tool", "args_valid", "args_exact", "answer_right")
        }
        return d


def _task(obj: Any, where: str) -> EvalTask:
    file, line = where.rsplit(":", 1)

    def bad(msg: str) -> DatasetError:
        return DatasetError(
            f"{where}: {msg}",
            fix='Each line: {"messages": [...], "tools": [...], "expected": {"name": ..., '
            '"arguments": {...}}, "answer": "..."} (answer and tool_result optional).',
            file=file,
            line=int(line),
        )

    if not isinstance(obj, dict):
        raise bad("each line must be a JSON object")
    msgs, tools, exp = obj.get("messages"), obj.get("tools"), obj.get("expected")
    if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
        raise bad("'messages' must be a non-empty list of messages")
    if not isinstance(tools, list) or not tools:
        raise bad("'tools' must be a non-empty list of OpenAI function schemas")
    if not isinstance(exp, dict) or not isinstance(exp.get("name"), str):
        raise bad("'expected' must be an object with the tool 'name' (and 'arguments')")
    args = exp.get("arguments")
    if args is not None and not isinstance(args, dict):
        raise bad("'expected.arguments' must be an object")
    answer = obj.get("answer")
    result = obj.get("tool_result")
    return EvalTask(
        messages=msgs,
        tools=tools,
        expected_name=exp["name"],
        expected_arguments=args,
        tool_result=None if result is None else str(result),
        answer=None if answer is None else str(answer),
        source=where,
    )


def load_tasks(path: str | Path, max_tasks: int = MAX_TASKS) -> list[EvalTask]:
    """Every task of a JSONL file, validated (errors name the file and line)."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: task file not found", file=str(p))
    tasks: list[EvalTask] = []
    with open(p, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"{p}:{lineno}"
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise DatasetError(
                    f"{where}: broken JSON: {exc.msg}", file=str(p), line=lineno
                ) from None
            tasks.append(_task(obj, where))
            if len(tasks) > max_tasks:
                raise DatasetError(
                    f"{p}: more than {max_tasks} tasks",
                    fix="Evaluate a sample of the tasks (an evaluation is a measurement, "
                    "not a batch job).",
                    file=str(p),
                )
    if not tasks:
        raise DatasetError(f"{p}: the task file has no tasks", file=str(p))
    return tasks


def _same(a: Any, b: Any) -> bool:
    """Arguments equal as JSON values, numbers by value (12 == 12.0)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _schema_of(tools: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    for t in tools:
        fn = t.get("function") if isinstance(t, dict) else None
        if isinstance(fn, dict) and fn.get("name") == name:
            params = fn.get("parameters")
            return params if isinstance(params, dict) else {}
    return None


def _norm(text: str) -> str:
    return " ".join(text.lower().replace(",", "").split())


def answer_found(expected: str, text: str) -> bool:
    """``expected`` appears in ``text`` as a whole (case, thousands commas and spacing
    aside): "12" is not found in "120" or "0.12", "cat" not in "concatenate"; a
    sentence's full stop after it is fine. A substring test counted those as right."""
    want = _norm(expected).rstrip(".")
    if not want:
        return False
    pattern = rf"(?<![\w.]){re.escape(want)}(?!\w|\.\d)"
    return re.search(pattern, _norm(text)) is not None


async def _chat(
    client: Any, model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "temperature": 0.0,
        "max_tokens": 256,
    }
    if tools:
        body["tools"] = tools
        body["tool_choice"] = "auto"
    r = await client.post("/v1/chat/completions", json=body)
    if r.status_code != 200:
        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
    msg: dict[str, Any] = r.json()["choices"][0]["message"]
    return msg


def _fail(report: EvalReport, failure: dict[str, Any]) -> None:
    if len(report.failures) < 20:
        report.failures.append(failure)


async def _score(client: Any, model: str, task: EvalTask, report: EvalReport) -> None:
    import jsonschema

    failure: dict[str, Any] = {"task": task.source}
    try:
        msg = await _chat(client, model, task.messages, task.tools)
    except Exception as exc:
        report.errors += 1
        failure["error"] = f"{type(exc).__name__}: {exc}"[:300]
        _fail(report, failure)
        return
    calls = msg.get("tool_calls") or []
    if not calls:
        failure["got"] = (msg.get("content") or "")[:200]
        _fail(report, failure)
        return
    report.called += 1
    fn = calls[0].get("function") or {}
    name, raw = fn.get("name"), fn.get("arguments") or "{}"
    failure["got"] = {"name": name, "arguments": str(raw)[:200]}
    if name != task.expected_name:
        _fail(report, failure)
        return
    report.right_tool += 1
    try:
        args = json.loads(raw) if isinstance(raw, str) else raw
        schema = _schema_of(task.tools, name) or {}
        jsonschema.validate(args, schema)
    except (json.JSONDecodeError, jsonschema.ValidationError, jsonschema.SchemaError):
        _fail(report, failure)
        return
    report.args_valid += 1
    exact = task.expected_arguments is None or _same(args, task.expected_arguments)
    report.args_exact += int(exact)
    if task.answer is None:
        if not exact:
            _fail(report, failure)
        return
    report.answered += 1
    if task.tool_result is None:
        return
    call_id = calls[0].get("id") or "call_0"
    follow = [
        *task.messages,
        {"role": "assistant", "content": None, "tool_calls": [calls[0]]},
        {"role": "tool", "tool_call_id": call_id, "content": task.tool_result},
    ]
    try:
        final = await _chat(client, model, follow, task.tools)
    except Exception as exc:
        report.errors += 1
        failure["error"] = f"{type(exc).__name__}: {exc}"[:300]
        _fail(report, failure)
        return
    text = final.get("content") or ""
    if answer_found(task.answer, text):
        report.answer_right += 1
    else:
        failure["answer"] = text[:200]
        _fail(report, failure)


async def evaluate_tool_calls(
    base_url: str,
    model: str,
    tasks: list[EvalTask],
    *,
    api_key: str | None = None,
    concurrency: int = 4,
    timeout_s: float = 60.0,
) -> EvalReport:
    """Score ``model`` served at ``base_url`` (``http://host:port``, with or without
    ``/v1``) on ``tasks``. Greedy decoding (temperature 0), so a rerun is comparable."""
    import time

    import httpx

    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise InputValidationError(
            f"concurrency {concurrency} out of range (1 to {MAX_CONCURRENCY}).",
            fix="Pass a smaller --concurrency.",
        )
    if not 0 < timeout_s <= 3600:
        raise InputValidationError(
            f"timeout {timeout_s} s out of range.", fix="Pass 0 < --timeout <= 3600."
        )
    root = base_url.rstrip("/").removesuffix("/v1")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    report = EvalReport(model=model, tasks=len(tasks))
    gate = asyncio.Semaphore(concurrency)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=root, headers=headers, timeout=timeout_s) as client:

        async def one(task: EvalTask) -> None:
            async with gate:
                await _score(client, model, task, report)

        await asyncio.gather(*(one(t) for t in tasks))
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def format_reports(reports: list[EvalReport]) -> str:
    """A side-by-side table of several models on the same tasks."""
    cols = [
        ("called", "called"),
        ("right_tool", "right tool"),
        ("args_valid", "args valid"),
        ("args_exact", "args exact"),
        ("answer_right", "answer"),
    ]
    width = max([len("model"), *(len(r.model) for r in reports)])
    head = f"{'model':<{width}}  " + "  ".join(f"{t:>10}" for _, t in cols) + "  errors"
    lines = [head, "-" * len(head)]
    for r in reports:
        cells = []
        for key, _ in cols:
            denom = r.answered if key == "answer_right" else r.tasks
            cells.append(f"{getattr(r, key):>4}/{denom:<4}" if denom else f"{'-':>10}")
        lines.append(
            f"{r.model:<{width}}  " + "  ".join(f"{c:>10}" for c in cells) + f"  {r.errors:>6}"
        )
    return "\n".join(lines)
