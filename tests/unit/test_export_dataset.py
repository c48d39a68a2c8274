"""The dataset export reads a real store (SQLite, no Ray): rows have OpenAI's
fine-tuning shape, filters work, tenants stay apart, rows are bounded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lumos_ray.actors.agent import Agent
from lumos_ray.errors import DatasetError, InputValidationError, NotFoundError
from lumos_ray.finetune import ExportStats, export_dataset, iter_export_rows, set_run_score
from lumos_ray.store import RunStore
from lumos_ray.workflows import AgentStep, Workflow
from lumos_ray.workflows._serialize import definition_version, workflow_to_data


def _workflow(name: str = "calc-wf") -> Workflow:
    helper = Agent(name="calc", instructions="Use the calculator.", tools=["calculator"])
    return Workflow(name=name, agents=[helper], steps=[AgentStep(agent="calc", id="ask")])


def _transcript(i: int) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": f"what is {i} + 2?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_{i}",
                    "type": "function",
                    "function": {
                        "name": "calculator",
                        "arguments": json.dumps({"expression": f"{i}+2"}),
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": f"call_{i}", "content": str(i + 2)},
        {"role": "assistant", "content": f"{i} + 2 = {i + 2}"},
    ]


def _add_run(
    store: RunStore, wf: Workflow, run_id: str, status: str, msgs: list[dict[str, Any]]
) -> None:
    body = workflow_to_data(wf)
    version = definition_version(body)
    store.put_definition("workflow", wf.name, version, body)
    store.create_run(run_id, wf.name, version, None, status)
    store.append_messages_many("calc", [(f"{run_id}/ask", msgs)])


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    s = RunStore(f"sqlite:///{tmp_path}/runs.db", "acme")
    yield s
    s.close()


def test_rows_have_the_openai_chat_with_tools_shape(store: RunStore, tmp_path: Path) -> None:
    _add_run(store, _workflow(), "r1", "succeeded", _transcript(1))
    stats = export_dataset(tmp_path / "out.jsonl", store)
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert stats.rows == 1 and len(rows) == 1
    row = rows[0]
    assert [m["role"] for m in row["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    assert row["messages"][0]["content"] == "Use the calculator."
    call = row["messages"][2]
    assert call["content"] is None
    assert call["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "calculator", "arguments": '{"expression": "1+2"}'},
        }
    ]
    assert row["messages"][3] == {"role": "tool", "tool_call_id": "call_1", "content": "3"}
    (tool,) = row["tools"]
    assert tool["type"] == "function" and tool["function"]["name"] == "calculator"
    assert tool["function"]["parameters"]["type"] == "object"


def test_filters_status_workflow_agent_time_and_tool_calls(store: RunStore) -> None:
    _add_run(store, _workflow(), "ok", "succeeded", _transcript(1))
    _add_run(store, _workflow(), "bad", "failed", _transcript(2))
    _add_run(store, _workflow("other-wf"), "o", "succeeded", _transcript(3))
    _add_run(
        store,
        _workflow(),
        "plain",
        "succeeded",
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
        ],
    )

    def ids(**kw: Any) -> list[str]:
        return [json.loads(x)["messages"][1]["content"] for x in iter_export_rows(store, **kw)]

    assert ids() == ["what is 1 + 2?", "what is 3 + 2?", "hi"]
    assert ids(status="failed") == ["what is 2 + 2?"]
    assert len(ids(status=None)) == 4
    assert ids(workflow="other-wf") == ["what is 3 + 2?"]
    assert ids(agent="nobody") == []
    assert ids(require_tool_calls=True) == ["what is 1 + 2?", "what is 3 + 2?"]
    created = store.get_run("o")["created_at"]
    assert ids(since=created) == ["what is 3 + 2?", "hi"]
    assert ids(until=created) == ["what is 1 + 2?"]
    with pytest.raises(InputValidationError):
        list(iter_export_rows(store, status="done"))
    with pytest.raises(InputValidationError):
        list(iter_export_rows(store, since=5.0, until=1.0))


def test_min_score_keeps_runs_scored_high_enough(store: RunStore) -> None:
    for i, score in enumerate([0.9, 0.2, None]):
        _add_run(store, _workflow(), f"s{i}", "succeeded", _transcript(i))
        if score is not None:
            set_run_score(store, f"s{i}", 0.0)
            set_run_score(store, f"s{i}", score)  # the latest score counts
    stats = ExportStats()
    rows = list(iter_export_rows(store, min_score=0.5, stats=stats))
    assert len(rows) == 1 and "what is 0 + 2?" in rows[0]
    assert stats.skipped_score == 2
    with pytest.raises(InputValidationError):
        set_run_score(store, "s0", float("nan"))
    with pytest.raises(NotFoundError):
        set_run_score(store, "missing", 1.0)


def test_another_tenants_runs_are_never_exported(store: RunStore) -> None:
    _add_run(store, _workflow(), "mine", "succeeded", _transcript(1))
    other = store.for_tenant("globex")
    _add_run(other, _workflow(), "theirs", "succeeded", _transcript(2))
    mine = list(iter_export_rows(store))
    theirs = list(iter_export_rows(other))
    assert len(mine) == 1 and "1 + 2" in mine[0]
    assert len(theirs) == 1 and "2 + 2" in theirs[0]
    with pytest.raises(NotFoundError):
        set_run_score(other, "mine", 1.0)


def test_oversized_rows_are_skipped_and_counted_or_fail_when_strict(
    store: RunStore, tmp_path: Path
) -> None:
    _add_run(store, _workflow(), "small", "succeeded", _transcript(1))
    big = _transcript(2)
    big[-1]["content"] = "x" * 5000
    _add_run(store, _workflow(), "big", "succeeded", big)
    stats = export_dataset(tmp_path / "o.jsonl", store, max_row_bytes=3000)
    assert stats.rows == 1 and stats.skipped_oversize == 1
    with pytest.raises(DatasetError, match="over the bound"):
        export_dataset(tmp_path / "strict.jsonl", store, max_row_bytes=3000, strict=True)
    assert not (tmp_path / "strict.jsonl").exists()  # no half-written file


def test_many_runs_stream_through_pages(store: RunStore, tmp_path: Path) -> None:
    wf = _workflow()
    body = workflow_to_data(wf)
    version = definition_version(body)
    store.put_definition("workflow", wf.name, version, body)
    for i in range(450):  # more than two pages of runs
        store.create_run(f"run{i:04d}", wf.name, version, None, "succeeded")
    store.append_messages_many("calc", [(f"run{i:04d}/ask", _transcript(i)) for i in range(450)])
    stats = export_dataset(tmp_path / "many.jsonl", store)
    assert stats.rows == 450 and stats.runs_seen == 450
    firsts = [json.loads(x)["messages"][1]["content"] for x in (tmp_path / "many.jsonl").open()]
    assert len(set(firsts)) == 450


def _lumos(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from lumos_ray.cli import main

    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_scores_and_exports_for_the_callers_tenant_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    seed = RunStore(url, "acme")
    _add_run(seed, _workflow(), "a1", "succeeded", _transcript(1))
    _add_run(seed, _workflow(), "a2", "succeeded", _transcript(2))
    _add_run(seed.for_tenant("globex"), _workflow(), "g1", "succeeded", _transcript(3))
    seed.close()
    monkeypatch.setenv("LUMOS_STORE_URL", url)
    monkeypatch.setenv("LUMOS_TENANT", "acme")
    code, out, _ = _lumos(capsys, "runs", "score", "a2", "0.9")
    assert code == 0 and "score 0.9" in out
    code, _, err = _lumos(capsys, "runs", "score", "g1", "0.9")  # another tenant's run
    assert code != 0 and "LUMOS-E003" in err
    dest = tmp_path / "out.jsonl"
    code, out, _ = _lumos(capsys, "runs", "export", "--out", str(dest), "--min-score", "0.5")
    assert code == 0 and "wrote 1 rows" in out and "score: 1 skipped" in out
    (row,) = [json.loads(x) for x in dest.read_text().splitlines()]
    assert row["messages"][1]["content"] == "what is 2 + 2?"
    code, out, _ = _lumos(capsys, "runs", "export", "--out", str(dest), "--json")
    assert code == 0 and json.loads(out)["rows"] == 2  # acme's two, never globex's
    code, _, err = _lumos(capsys, "runs", "export", "--out", str(dest), "--since", "soon")
    assert code != 0 and "LUMOS-E012" in err and "ISO" in err
