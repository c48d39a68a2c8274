"""Tracing across HTTP: a caller's ``traceparent`` is continued by the gateway and the
vLLM model deployment, with correct parent links, on the shared served lumos-tiny.

Spans are read back from the JSONL exporter the integration conftest configures
(``LUMOS_TRACE_EXPORTER=jsonl:DIR``): every process appends its spans to its own file
in DIR.

The serving chain: HTTP caller -> ``gateway.request`` (SERVER, gateway replica) ->
``llm.request`` (SERVER, the model's host: in the gateway's own process, as the shared
app runs its one model ``in_gateway``) -> ``llm.generate`` (the engine call), checked by
:func:`serving_chain`. The whole chain of a durable run: ``workflow.run`` (runner) ->
``workflow.step`` -> ``agent.turn`` (agent actor) -> ``agent.model_call`` ->
``OpenAIChatModel``'s ``traceparent`` header -> the serving chain, one trace id. The
``lumos run`` CLI reaches the same runner, so its test only needs another way to start
the run and the same assertions (:func:`assert_run_reaches_vllm`).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from typing import Any

import httpx
import pytest

from lumos_ray.tracing import read_jsonl_spans
from tests.integration._served import KEY_ENV

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

pytest_plugins = ["tests.integration._served"]

SERVING_SPANS = ("gateway.request", "llm.request", "llm.generate")


def span_dir() -> str:
    spec = os.environ.get("LUMOS_TRACE_EXPORTER", "")
    assert spec.startswith("jsonl:"), f"the integration conftest sets jsonl:DIR, got {spec!r}"
    return spec[len("jsonl:") :]


def trace_spans(trace_id: str, needed: tuple[str, ...], timeout_s: float = 60) -> list[dict]:
    """The spans of ``trace_id`` once every name in ``needed`` was exported.

    Spans are written when they end, by other processes: a streamed request's spans
    end after the last chunk was sent, so poll rather than read once."""
    deadline = time.monotonic() + timeout_s
    while True:
        spans = [s for s in read_jsonl_spans(span_dir()) if s["trace_id"] == trace_id]
        names = {s["name"] for s in spans}
        if set(needed) <= names or time.monotonic() > deadline:
            return spans
        time.sleep(0.2)


def serving_chain(spans: list[dict], gateway: dict) -> tuple[dict, dict]:
    """Check gateway -> llm.request -> llm.generate below ``gateway``; return the two."""
    by_name: dict[str, list[dict]] = {}
    for s in spans:
        by_name.setdefault(s["name"], []).append(s)
    (request,) = [s for s in by_name.get("llm.request", []) if s["parent_id"] == gateway["span_id"]]
    (generate,) = [
        s for s in by_name.get("llm.generate", []) if s["parent_id"] == request["span_id"]
    ]
    # The shared app runs its model in the gateway's replica (in_gateway, the default
    # for one model): the context travels in-process, through the same carrier a
    # handle call sends.
    assert request["pid"] == gateway["pid"] == generate["pid"]
    assert request["attributes"]["lumos.model"] == "lumos-tiny"
    # Causal order only: the replica's spans may end just after the gateway sent a
    # non-streamed answer (its generator finishes after the yield is delivered).
    assert gateway["start"] <= request["start"] <= generate["start"]
    assert generate["end"] <= request["end"]
    return request, generate


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_traceparent_continues_through_gateway_and_model_deployment(
    client: httpx.Client, stream: bool
) -> None:
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    body = {
        "model": "lumos-tiny",
        "messages": [{"role": "user", "content": "Trace me."}],
        "max_tokens": 4,
        "temperature": 0,
        "stream": stream,
    }
    headers = {"traceparent": f"00-{trace_id}-{caller_span}-01"}
    with client.stream("POST", "/chat/completions", json=body, headers=headers) as r:
        text = r.read().decode()
    assert r.status_code == 200, text
    if stream:
        assert text.rstrip().endswith("data: [DONE]")
    else:
        assert json.loads(text)["usage"]["completion_tokens"] == 4

    spans = trace_spans(trace_id, SERVING_SPANS)
    names = sorted(s["name"] for s in spans)
    assert names == sorted(SERVING_SPANS), names  # exactly one of each, nothing stray
    (gateway,) = [s for s in spans if s["name"] == "gateway.request"]
    assert gateway["parent_id"] == caller_span  # a child of the caller's span
    assert gateway["attributes"]["http.route"] == "/v1/chat/completions"
    assert gateway["attributes"]["http.response.status_code"] == 200
    assert gateway["attributes"]["lumos.model"] == "lumos-tiny"
    _, generate = serving_chain(spans, gateway)
    if not stream:
        assert generate["attributes"]["gen_ai.usage.output_tokens"] == 4


def test_request_without_traceparent_starts_its_own_trace(client: httpx.Client) -> None:
    """No incoming context: the gateway span is a root and the model spans still hang
    below it (one new trace per request, never spans joined to a stale context)."""
    before = {s["span_id"] for s in read_jsonl_spans(span_dir())}
    r = client.post("/completions", json={"model": "lumos-tiny", "prompt": "hi", "max_tokens": 2})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 60
    roots: list[dict[str, Any]] = []
    while not roots and time.monotonic() < deadline:
        roots = [
            s
            for s in read_jsonl_spans(span_dir())
            if s["name"] == "gateway.request"
            and s["span_id"] not in before
            and s["attributes"].get("http.route") == "/v1/completions"
        ]
        time.sleep(0.2)
    assert len(roots) == 1, roots
    assert roots[0]["parent_id"] is None
    spans = trace_spans(roots[0]["trace_id"], SERVING_SPANS)
    serving_chain(spans, roots[0])


def assert_run_reaches_vllm(run_id: str) -> list[dict]:
    """One trace from the run's root span down to the vLLM engine, parents linked."""
    deadline = time.monotonic() + 60
    root: dict[str, Any] | None = None
    while root is None and time.monotonic() < deadline:
        root = next(
            (
                s
                for s in read_jsonl_spans(span_dir())
                if s["name"] == "workflow.run" and s["attributes"].get("run_id") == run_id
            ),
            None,
        )
        time.sleep(0.2)
    assert root is not None, f"no workflow.run span for {run_id}"
    spans = trace_spans(root["trace_id"], ("workflow.run", "agent.model_call", *SERVING_SPANS))
    by_id = {s["span_id"]: s for s in spans}
    (gateway,) = [s for s in spans if s["name"] == "gateway.request"]
    call = by_id[gateway["parent_id"]]  # the HTTP request continued the agent's span
    assert call["name"] == "agent.model_call"
    turn = by_id[call["parent_id"]]
    assert turn["name"] == "agent.turn" and turn["pid"] != gateway["pid"]
    step = by_id[turn["parent_id"]]
    assert step["name"] == "workflow.step" and step["parent_id"] == root["span_id"]
    serving_chain(spans, gateway)
    return spans


def test_one_trace_from_lumos_run_through_the_gateway_to_vllm(
    served: Any, ray_cluster: Any, tmp_path: Any
) -> None:
    """`lumos run` (its own process, attached to the cluster) starts a durable run with
    one agent step whose model is the served lumos-tiny: one trace from the command's
    span through the runner, the agent actor, the gateway and the vLLM replica."""
    import subprocess
    import sys

    import yaml

    wf = {
        "name": "traced-http",
        "agents": [
            {
                "name": "traced-served",
                "instructions": "Be brief.",
                "max_steps": 1,
                "model": {
                    "provider": "openai",
                    "name": "lumos-tiny",
                    "base_url": served[0],
                    "api_key_env": KEY_ENV,
                    "extra_body": {"max_tokens": 4, "temperature": 0, "ignore_eos": True},
                },
            }
        ],
        "steps": [{"id": "ask", "agent": "traced-served", "input": "Say hi."}],
    }
    path = tmp_path / "traced.yaml"
    path.write_text(yaml.safe_dump(wf))
    cmd = [sys.executable, "-m", "lumos_ray", "run", str(path), "--json"]
    out = subprocess.run(
        [*cmd, "--address", ray_cluster.address],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    run = json.loads(out.stdout)["run"]
    assert run["status"] == "succeeded", run["error"]
    spans = assert_run_reaches_vllm(run["id"])
    (root,) = [s for s in spans if s["name"] == "workflow.run"]
    cli_span = [s for s in read_jsonl_spans(span_dir()) if s["span_id"] == root["parent_id"]]
    assert cli_span and cli_span[0]["name"] == "lumos.run"
    assert cli_span[0]["trace_id"] == root["trace_id"] and cli_span[0]["parent_id"] is None
