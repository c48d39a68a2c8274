"""Agent runs and threads -> a chat-with-tools JSONL dataset (OpenAI's fine-tuning shape).

Why this exists: what agents did (which tool they called, with which arguments, and
what they answered with its result) is the best training data a team has for its
own model, and it already sits in the run store. Each row is one agent thread::

    {"messages": [{"role": "system", ...}, {"role": "user", ...},
                  {"role": "assistant", "content": null,
                   "tool_calls": [{"id", "type": "function",
                                   "function": {"name", "arguments": "<json string>"}}]},
                  {"role": "tool", "tool_call_id", "content"},
                  {"role": "assistant", "content": "..."}],
     "tools": [{"type": "function", "function": {"name", "description", "parameters"}}]}

Where the parts come from: messages are the thread's stored history (the agent actor
persists user, assistant and tool messages); the system message and the ``tools``
offered are not stored with them, so they are rebuilt from the run's registered
workflow definition (the agent's instructions and tools, resolved to their schemas).

Bounded: runs are read a page at a time (:meth:`RunStore.runs_page`) and one thread at
a time, rows are written as they are made, and a row larger than ``max_row_bytes`` is
skipped and counted (or, with ``strict``, stops the export with a clear error).

Scores: runs have no built-in quality score, so a user sets one with
:func:`set_run_score` (a ``score`` event on the run, the latest one counts) and
``min_score`` keeps only runs scored at least that much.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lumos_ray.errors import DatasetError, InputValidationError

__all__ = [
    "ExportStats",
    "export_dataset",
    "iter_export_rows",
    "run_score",
    "set_run_score",
]

#: A row bigger than this is skipped (or, strict, an error): one thread is a training
#: example, and an example longer than any context window teaches nothing.
DEFAULT_MAX_ROW_BYTES = 1_000_000
MAX_ROW_BYTES_LIMIT = 64_000_000
_PAGE = 200
_THREADS_PER_RUN = 1000
SCORE_EVENT = "score"


@dataclass
class ExportStats:
    """What an export did: rows written and every reason a candidate was left out."""

    runs_seen: int = 0
    threads_seen: int = 0
    rows: int = 0
    skipped_oversize: int = 0
    skipped_score: int = 0
    skipped_no_tool_calls: int = 0
    skipped_empty: int = 0
    tools_unresolved: int = 0  # rows written with the tools their definition could give
    out: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- scores -----------------------------------------------------------------------
def set_run_score(store: Any, run_id: str, score: float, note: str = "") -> None:
    """Give a finished run a quality score (the latest one set counts).

    Stored as a ``score`` event on the run, so it needs no schema change and keeps
    its history (who rescored it, when)."""
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        raise InputValidationError(
            f"Invalid score {score!r}: must be a finite number.",
            fix="Pass a number, e.g. 1 for a good run and 0 for a bad one.",
        )
    store.get_run(run_id)  # NotFoundError for another tenant's run or a typo
    data: dict[str, Any] = {"score": float(score)}
    if note:
        data["note"] = str(note)[:1000]
    store.append_events(run_id, [(SCORE_EVENT, data)])


def run_score(store: Any, run_id: str) -> float | None:
    """The run's latest score, or None when nobody scored it."""
    last: float | None = None
    after = 0
    while True:
        page = store.read_events(run_id, after=after, limit=1000, type=SCORE_EVENT)
        for ev in page:
            value = (ev.get("data") or {}).get("score")
            if isinstance(value, int | float) and not isinstance(value, bool):
                last = float(value)
            after = int(ev["seq"])
        if len(page) < 1000:
            return last


# -- message shape ----------------------------------------------------------------
def _text(content: Any) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        return "".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return json.dumps(content, default=str)


def _tool_call(tc: Any) -> dict[str, Any] | None:
    if not isinstance(tc, dict):
        return None
    inner = tc.get("function")
    fn: dict[str, Any] = inner if isinstance(inner, dict) else tc
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        return None
    # Redacted again here: threads stored before the agent loop redacted secret-named
    # arguments (lumos_ray.tools._redact) still hold them, and a dataset file must not.
    from lumos_ray.tools._redact import redact_arguments

    args = fn.get("arguments", "{}")
    args = redact_arguments(args if isinstance(args, str | dict) else json.dumps(args))
    return {
        "id": str(tc.get("id") or ""),
        "type": "function",
        "function": {"name": name, "arguments": args},
    }


def clean_messages(stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored history -> OpenAI chat messages: only the fields the format has
    (role, content, tool_calls, tool_call_id); content is null on an assistant turn
    that only calls tools."""
    out: list[dict[str, Any]] = []
    for m in stored:
        if not isinstance(m, dict):
            continue
        role = m.get("role")
        if role == "assistant":
            msg: dict[str, Any] = {"role": "assistant", "content": _text(m.get("content"))}
            calls = [c for c in map(_tool_call, m.get("tool_calls") or []) if c]
            if calls:
                msg["tool_calls"] = calls
                if msg["content"] == "":
                    msg["content"] = None
            elif msg["content"] is None:
                msg["content"] = ""
            out.append(msg)
        elif role == "tool":
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": str(m.get("tool_call_id") or ""),
                    "content": _text(m.get("content")) or "",
                }
            )
        elif role in ("user", "system"):
            out.append({"role": role, "content": _text(m.get("content")) or ""})
    return out


# -- tools offered, from the registered definition ----------------------------------
class _Definitions:
    """(workflow, version, agent) -> (instructions, tool schemas), looked up once."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._cache: dict[tuple[str, str, str], tuple[str, list[dict[str, Any]], bool]] = {}

    def agent_context(
        self, workflow: str, version: str, agent: str
    ) -> tuple[str, list[dict[str, Any]], bool]:
        """(instructions, tools, resolved): ``resolved`` is False when the definition
        or one of its tools could not be loaded (the row keeps what could be)."""
        key = (workflow, version, agent)
        if key not in self._cache:
            self._cache[key] = self._load(workflow, version, agent)
        return self._cache[key]

    def _load(
        self, workflow: str, version: str, agent: str
    ) -> tuple[str, list[dict[str, Any]], bool]:
        from lumos_ray.workflows._serialize import workflow_from_data

        try:
            body = self.store.get_definition("workflow", workflow, version)["body"]
            wf = workflow_from_data(body)
        except Exception:
            return "", [], False
        spec = next((a for a in _agents_of(wf) if a.name == agent), None)
        if spec is None:
            return "", [], False
        tools, ok = agent_tool_schemas(spec)
        return spec.instructions or "", tools, ok


def _agents_of(wf: Any) -> Iterator[Any]:
    """The workflow's agents: declared ones and inline specs in its steps."""
    from lumos_ray.actors.agent import Agent
    from lumos_ray.workflows._definition import iter_steps

    yield from wf.agents
    for step in iter_steps(wf.steps):
        spec = getattr(step, "agent", None)
        if isinstance(spec, Agent):
            yield spec


def agent_tool_schemas(spec: Any) -> tuple[list[dict[str, Any]], bool]:
    """The OpenAI function schemas an agent is offered (its tools; agents named as
    tools become the ``ask_*`` tool it sees), and whether all of them resolved."""
    from lumos_ray.actors._agent_tool import agent_tools
    from lumos_ray.tools import resolve_tools

    ok = True
    out: list[dict[str, Any]] = []
    try:
        items = agent_tools(spec, "default", lambda *a, **k: None, lambda s: "")
    except Exception:
        return [], False
    for item in items:
        try:
            out.extend(t.openai_schema() for t in resolve_tools([item]))
        except Exception:
            ok = False
    return out, ok


# -- the export -----------------------------------------------------------------------
def _check_filters(
    status: str | None, since: float | None, until: float | None, min_score: float | None
) -> None:
    from lumos_ray.store import RUN_STATES

    if status is not None and status not in RUN_STATES:
        raise InputValidationError(
            f"Invalid run status {status!r} for the export.",
            fix=f"Use one of: {', '.join(sorted(RUN_STATES))} (or no status for all).",
        )
    if since is not None and until is not None and since >= until:
        raise InputValidationError(
            f"The time range is empty (since {since} >= until {until}).",
            fix="Pass --since before --until (Unix seconds or ISO dates).",
        )
    if min_score is not None and not math.isfinite(min_score):
        raise InputValidationError("--min-score must be a finite number.", fix="Pass e.g. 0.5.")


def iter_export_rows(
    store: Any,
    *,
    workflow: str | None = None,
    agent: str | None = None,
    status: str | None = "succeeded",
    since: float | None = None,
    until: float | None = None,
    min_score: float | None = None,
    require_tool_calls: bool = False,
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
    strict: bool = False,
    stats: ExportStats | None = None,
) -> Iterator[str]:
    """One JSON line per agent thread of the matching runs, in run order.

    ``store`` is the caller's tenant's store: another tenant's runs are never read.
    Only runs are exported (their threads are ``RUN_ID/...``): their definitions say
    which tools the agent was offered."""
    _check_filters(status, since, until, min_score)
    if not isinstance(max_row_bytes, int) or not 1 <= max_row_bytes <= MAX_ROW_BYTES_LIMIT:
        raise InputValidationError(
            f"Invalid max_row_bytes {max_row_bytes!r}: 1 to {MAX_ROW_BYTES_LIMIT}.",
            fix="Pass a row size bound in bytes, e.g. 1000000.",
        )
    st = stats if stats is not None else ExportStats()
    defs = _Definitions(store)
    after: tuple[float, str] | None = None
    while True:
        page = store.runs_page(
            status=status, workflow=workflow, since=since, until=until, after=after, limit=_PAGE
        )
        for run in page:
            st.runs_seen += 1
            if min_score is not None:
                score = run_score(store, run["id"])
                if score is None or score < min_score:
                    st.skipped_score += 1
                    continue
            threads = store.list_threads(agent, _THREADS_PER_RUN, prefix=f"{run['id']}/")
            for th in threads:
                st.threads_seen += 1
                stored = store.load_messages_many(th["agent"], [th["thread_id"]])[th["thread_id"]]
                msgs = clean_messages(stored)
                if not any(m["role"] == "assistant" for m in msgs):
                    st.skipped_empty += 1
                    continue
                if require_tool_calls and not any(m.get("tool_calls") for m in msgs):
                    st.skipped_no_tool_calls += 1
                    continue
                instructions, tools, resolved = defs.agent_context(
                    run["workflow"], run["version"], th["agent"]
                )
                if not resolved:
                    st.tools_unresolved += 1
                if instructions and msgs[0]["role"] != "system":
                    msgs.insert(0, {"role": "system", "content": instructions})
                row: dict[str, Any] = {"messages": msgs}
                if tools:
                    row["tools"] = tools
                line = json.dumps(row, ensure_ascii=False)
                size = len(line.encode())
                if size > max_row_bytes:
                    if strict:
                        raise DatasetError(
                            f"Thread {th['thread_id']!r} of agent {th['agent']!r} is {size} "
                            f"bytes as a row, over the bound of {max_row_bytes}.",
                            fix="Raise --max-row-bytes, or drop --strict to skip such rows "
                            "(they are counted in the summary).",
                        )
                    st.skipped_oversize += 1
                    continue
                st.rows += 1
                yield line
        if len(page) < _PAGE:
            return
        after = (page[-1]["created_at"], page[-1]["id"])


def export_dataset(out: str | Path, store: Any = None, **filters: Any) -> ExportStats:
    """Write the matching runs' agent threads to ``out`` as JSONL (see the module doc).

    ``store`` defaults to this process's store for the configured tenant. The file is
    written to a temp name and renamed at the end, so a failed export leaves no
    half-written dataset behind."""
    if store is None:
        from lumos_ray.store import open_store

        store = open_store()
    path = Path(out).expanduser()
    if path.is_dir():
        raise InputValidationError(
            f"--out {path} is a directory.", fix="Name a file, e.g. --out data/runs.jsonl."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    stats = ExportStats(out=str(path))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for line in iter_export_rows(store, stats=stats, **filters):
                f.write(line + "\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    if stats.rows == 0:
        stats.notes.append(
            "no rows matched: check the filters (status defaults to 'succeeded') and that "
            "the runs' agents keep history (memory.persist)"
        )
    return stats
