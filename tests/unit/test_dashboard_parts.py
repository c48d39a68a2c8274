"""Pieces of the dashboard that need no gateway: message catalogs (en/zh complete and
covering every key the templates use), language negotiation, CSRF token and Origin
checks, redirect targets, autoescaping and JSON escaping in templates, the typed
resume form, the runs-list cursor, the step timeline, the `lumos dev` status file."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import pytest

from lumos_ray.errors import InputValidationError
from lumos_ray.serve._dashboard import _data
from lumos_ray.serve._dashboard._devstatus import MAX_STATUS_BYTES, dev_errors
from lumos_ray.serve._dashboard._forms import form_fields, parse_form
from lumos_ray.serve._dashboard._i18n import LANGS, catalog, negotiate, translate
from lumos_ray.serve._dashboard._render import environment
from lumos_ray.serve._dashboard._security import (
    csrf_token,
    page_headers,
    safe_next,
    same_origin,
    valid_csrf,
)
from lumos_ray.store import RUN_STATES

PKG = resources.files("lumos_ray.serve._dashboard")
DYNAMIC = {
    "status.": sorted(RUN_STATES),
    "step.": ["running", "finished", "failed", "skipped", "waiting"],
    "role.": ["viewer", "developer", "admin"],
    "lang.": list(LANGS),
}


def _used_keys() -> set[str]:
    """Every catalog key the templates and routes name (literal and built)."""
    keys: set[str] = set()
    texts = [p.read_text("utf-8") for p in PKG.joinpath("templates").iterdir()]
    texts += [p.read_text("utf-8") for p in PKG.iterdir() if p.name.endswith(".py")]
    for text in texts:
        keys |= set(re.findall(r"""\bt\(\s*["']([a-z_]+\.[a-z_.]+)["']""", text))
        # Problems of the fork form name the catalog message they are shown with.
        keys |= set(re.findall(r"""_problem\(\s*["']([a-z_]+\.[a-z_]+)["']""", text))
        keys |= set(re.findall(r"""s\.t\(\s*f?["']([a-z_]+\.[a-z_]+)["']""", text))
        for prefix in re.findall(r"""\bt\(\s*["']([a-z_]+\.)["']\s*~""", text):
            keys |= {prefix + v for v in DYNAMIC[prefix]}
    keys |= {"login.invalid", "login.expired"}
    keys |= {f"usage.{m}" for m in ("requests", "prompt_tokens", "completion_tokens")}
    return keys


def test_both_catalogs_hold_the_same_keys_and_every_key_in_use() -> None:
    en, zh = catalog("en"), catalog("zh")
    assert set(en) == set(zh)
    used = _used_keys()
    assert len(used) > 60
    assert used <= set(en), sorted(used - set(en))
    # Chinese strings are Chinese (not copies of the English), except names.
    same = [k for k in en if en[k] == zh[k] and not k.startswith("lang.")]
    assert same == [], same
    # Placeholders match between languages.
    for k in en:
        assert set(re.findall(r"{(\w+)}", en[k])) == set(re.findall(r"{(\w+)}", zh[k])), k


def test_language_from_the_cookie_then_accept_language_then_english() -> None:
    assert negotiate("zh-CN,zh;q=0.9,en;q=0.8", None) == "zh"
    assert negotiate("en-US,en;q=0.9,zh;q=0.8", None) == "en"
    assert negotiate("fr-FR, zh;q=0.5, en;q=0.4", None) == "zh"
    assert negotiate("fr-FR", None) == "en"
    assert negotiate(None, None) == "en"
    assert negotiate("zh-CN", "en") == "en"
    assert negotiate("en", "zh") == "zh"
    assert negotiate("en", "xx") == "en"
    assert negotiate("zh;q=abc, en;q=0.1", None) == "en"
    assert negotiate(("x," * 100_000) + "zh", None) == "en"  # bounded parse
    assert translate("zh", "step.attempts", n=3) == "3 次尝试"
    assert translate("zh", "no.such.key") == "no.such.key"


def test_csrf_token_is_tied_to_the_key() -> None:
    t = csrf_token("sk-one")
    assert valid_csrf("sk-one", t)
    assert not valid_csrf("sk-two", t)
    assert not valid_csrf("sk-one", None)
    assert not valid_csrf("sk-one", "")
    assert not valid_csrf("sk-one", t + "0" * 200)
    assert "sk-one" not in t


def test_origin_check() -> None:
    host = "127.0.0.1:8000"
    assert same_origin({"origin": "http://127.0.0.1:8000"}, "http", host)
    assert not same_origin({"origin": "http://evil.example"}, "http", host)
    assert not same_origin({"origin": "https://127.0.0.1:8000"}, "http", host)
    assert not same_origin({"origin": "null"}, "http", host)
    assert same_origin({"referer": "http://127.0.0.1:8000/ui/runs/x"}, "http", host)
    assert not same_origin({"referer": "http://127.0.0.1:8000.evil.example/"}, "http", host)
    assert not same_origin({}, "http", host)  # neither header
    assert not same_origin({"origin": "http://127.0.0.1:8000"}, "http", None)
    # An Origin header wins over a matching Referer.
    both = {"origin": "http://evil.example", "referer": "http://127.0.0.1:8000/ui"}
    assert not same_origin(both, "http", host)


def test_redirect_targets_stay_on_the_dashboard() -> None:
    assert safe_next("/ui/runs/run-1") == "/ui/runs/run-1"
    assert safe_next("/pre/ui/runs?status=failed", "/pre") == "/pre/ui/runs?status=failed"
    for bad in ["//evil.example/ui", "https://evil.example/ui", "/v1/runs", "/ui\\evil", None]:
        assert safe_next(bad) == "/ui/runs", bad
    assert safe_next("/ui/runs", "/pre") == "/pre/ui/runs"
    assert safe_next("/ui" + "x" * 600) == "/ui/runs"


def test_headers_forbid_inline_script_and_framing() -> None:
    h = page_headers()
    csp = h["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe" not in csp
    assert "frame-ancestors 'none'" in csp and "form-action 'self'" in csp
    assert h["X-Content-Type-Options"] == "nosniff"


def test_templates_autoescape_and_script_data_is_json_escaped() -> None:
    env = environment()
    assert env.autoescape is True
    evil = "</script><script>alert(1)</script>"
    out = env.from_string("<p>{{ v }}</p><script type='application/json'>{{ d | tojson }}</script>")
    html = out.render(v=evil, d={"x": evil})
    assert "<script>alert(1)" not in html
    assert "&lt;/script&gt;" in html
    assert "\\u003c/script\\u003e" in html
    data = re.search(r"application/json'>(.*)</script>", html)
    assert data and json.loads(data.group(1)) == {"x": evil}


APPROVAL = {
    "type": "object",
    "required": ["approved"],
    "properties": {
        "approved": {"type": "boolean"},
        "note": {"type": "string", "description": "why"},
        "count": {"type": "integer"},
        "ratio": {"type": "number"},
        "level": {"type": "string", "enum": ["low", "high"]},
    },
}


def test_the_resume_form_is_typed_from_the_schema() -> None:
    kinds = {f.name: f.kind for f in form_fields(APPROVAL)}
    assert kinds == {
        "approved": "boolean",
        "note": "string",
        "count": "integer",
        "ratio": "number",
        "level": "enum",
    }
    value = parse_form(APPROVAL, {"approved": "on", "note": "ok", "count": "3", "ratio": "0.5"})
    assert value == {"approved": True, "note": "ok", "count": 3, "ratio": 0.5}
    # An unticked box is false, not missing.
    assert parse_form(APPROVAL, {}) == {"approved": False}
    assert parse_form({"type": "boolean"}, {"value": "on"}) is True
    assert parse_form({"type": "integer"}, {"value": "42"}) == 42
    assert parse_form({"type": "string", "enum": ["a", "b"]}, {"value": "b"}) == "b"
    nested = {"type": "object", "properties": {"items": {"type": "array"}}}
    assert [f.kind for f in form_fields(nested)] == ["json"]
    assert parse_form(nested, {"json": '{"items": [1, 2]}'}) == {"items": [1, 2]}
    assert [f.kind for f in form_fields(None)] == ["json"]


@pytest.mark.parametrize(
    ("schema", "form", "says"),
    [
        (APPROVAL, {"count": "three"}, "whole number"),
        (APPROVAL, {"ratio": "nan"}, "finite"),
        (APPROVAL, {"level": "medium"}, "one of the listed"),
        (APPROVAL, {"note": "x" * 20_001}, "longer than"),
        (
            {"type": "object", "required": ["n"], "properties": {"n": {"type": "number"}}},
            {},
            "required",
        ),
        (None, {"json": "{not json"}, "not valid JSON"),
        ({"type": "integer"}, {}, "required"),
    ],
)
def test_bad_form_values_get_a_clear_error(schema: object, form: dict, says: str) -> None:
    with pytest.raises(InputValidationError) as info:
        parse_form(schema, form)
    assert says in info.value.message


def test_runs_cursor_round_trips_and_refuses_garbage() -> None:
    c = _data.encode_cursor(1796159268.062977, "run-abc")
    assert _data.decode_cursor(c) == (1796159268.062977, "run-abc")
    assert _data.decode_cursor(None) is None
    for bad in ["nope", "1.5~", "~run", "nan~run", "x~run"]:
        with pytest.raises(InputValidationError):
            _data.decode_cursor(bad)


def test_step_timeline_from_events() -> None:
    ev = [
        {"seq": 1, "ts": 10.0, "type": "run_started", "data": {}},
        {
            "seq": 2,
            "ts": 10.0,
            "type": "step_started",
            "data": {"step": "0.a", "kind": "tool", "attempt": 1},
        },
        {
            "seq": 3,
            "ts": 11.0,
            "type": "step_failed",
            "data": {"step": "0.a", "attempt": 1, "error": "x"},
        },
        {
            "seq": 4,
            "ts": 11.0,
            "type": "step_started",
            "data": {"step": "0.a", "kind": "tool", "attempt": 2},
        },
        {"seq": 5, "ts": 12.0, "type": "step_finished", "data": {"step": "0.a", "attempt": 2}},
        {
            "seq": 6,
            "ts": 12.0,
            "type": "step_started",
            "data": {"step": "1.b", "kind": "agent", "attempt": 1},
        },
    ]
    steps = _data.step_timeline(ev)
    assert [(s["step"], s["status"], s["attempts"]) for s in steps] == [
        ("0.a", "finished", 2),
        ("1.b", "running", 1),
    ]
    # A human step waits from run_suspended until input_received.
    waits = {"seq": 7, "ts": 13.0, "type": "run_suspended", "data": {"step": "1.ok"}}
    answered = {"seq": 8, "ts": 14.0, "type": "input_received", "data": {"step": "1.ok"}}
    human = _data.step_timeline([*ev[:5], waits])[-1]
    assert (human["step"], human["status"], human["kind"]) == ("1.ok", "waiting", "human")
    human = _data.step_timeline([*ev[:5], waits, answered])[-1]
    assert (human["status"], human["duration_s"]) == ("finished", 1.0)
    # A step's time spans its attempts: first start to last end.
    assert steps[0]["duration_s"] == 2.0 and steps[0]["offset_pct"] == 0.0
    assert steps[1]["duration_s"] is None and steps[1]["offset_pct"] == 100.0


def test_dev_status_is_read_with_bounds(tmp_path: Path) -> None:
    f = tmp_path / "dev-status.json"
    assert dev_errors(f) == []  # missing
    f.write_text(json.dumps({"ok": True, "errors": []}))
    assert dev_errors(f) == []
    errs = [{"file": "wf.yaml", "line": 3, "message": "m" * 1500}] * 30
    f.write_text(json.dumps({"ok": False, "errors": errs}))
    shown = dev_errors(f)
    assert len(shown) == 20 and len(shown[0]["message"]) == 1000 and shown[0]["line"] == 3
    f.write_text("{not json")
    assert dev_errors(f) == []
    f.write_text(json.dumps({"ok": False, "errors": [{"file": "x", "line": "7"}, "junk"]}))
    assert dev_errors(f) == [{"file": "x", "line": 0, "message": ""}]
    f.write_bytes(b" " * (MAX_STATUS_BYTES + 1))
    assert "too large" in dev_errors(f)[0]["message"]


def test_trace_waterfall_from_jsonl_spans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lumos_ray.serve._dashboard._traces import waterfall

    tid, other = "a" * 32, "b" * 32
    spans = [
        {
            "name": "workflow.run",
            "trace_id": tid,
            "span_id": "1" * 16,
            "parent_id": None,
            "start": 1_000_000_000,
            "end": 3_000_000_000,
            "status": "UNSET",
            "attributes": {},
        },
        {
            "name": "workflow.step",
            "trace_id": tid,
            "span_id": "2" * 16,
            "parent_id": "1" * 16,
            "start": 2_000_000_000,
            "end": 3_000_000_000,
            "status": "ERROR",
            "attributes": {"step": "0.fee"},
        },
        {
            "name": "elsewhere",
            "trace_id": other,
            "span_id": "3" * 16,
            "parent_id": None,
            "start": 1,
            "end": 2,
            "status": "UNSET",
            "attributes": {},
        },
    ]
    (tmp_path / "spans-1.jsonl").write_text("\n".join(json.dumps(s) for s in spans) + "\n{bad\n")
    monkeypatch.setenv("LUMOS_TRACE_EXPORTER", "otlp")
    assert waterfall(tid) == {"source": "otlp", "readable": False, "spans": []}
    monkeypatch.setenv("LUMOS_TRACE_EXPORTER", f"jsonl:{tmp_path}")
    w = waterfall(tid)
    assert [(s["name"], s["depth"], s["offset_pct"]) for s in w["spans"]] == [
        ("workflow.run", 0, 0.0),
        ("workflow.step", 1, 50.0),
    ]
    assert w["spans"][1]["duration_ms"] == 1000.0 and w["spans"][1]["status"] == "ERROR"
    assert waterfall("c" * 32)["spans"] == []


def test_loss_curve_from_a_jobs_progress_lines() -> None:
    from lumos_ray.serve._dashboard._jobs import loss_curve

    logs = "\n".join(
        [
            "loading the model",
            'LUMOS_PROGRESS {"event": "start", "step": 0}',
            'LUMOS_PROGRESS {"event": "step", "step": 1, "loss": 2.5}',
            'LUMOS_PROGRESS {"event": "step", "step": 2, "loss": 2.0}',
            'LUMOS_PROGRESS {"event": "eval", "step": 2, "eval_loss": 2.2}',
            'LUMOS_PROGRESS {"event": "step", "step": 3, "loss": NaN}',
            "LUMOS_PROGRESS {broken",
            'LUMOS_PROGRESS {"event": "step", "step": 4, "loss": 1.5}',
        ]
    )
    assert loss_curve(logs) == {
        "step": [1, 2, 4],
        "loss": [2.5, 2.0, 1.5],
        "eval_loss": [None, 2.2, None],
    }
    assert loss_curve("") == {"step": [], "loss": [], "eval_loss": []}


def test_fork_points_and_edits_are_checked_and_only_changes_are_sent() -> None:
    from lumos_ray.errors import NotFoundError
    from lumos_ray.serve._dashboard._timetravel import changed_outputs, fork_point, parse_input

    cps = [{"path": p} for p in ("0.a", "1.b", "2.c")]
    point = fork_point(cps, "2.c", None)
    assert (point.from_step, point.kept) == ("2.c", ["0.a", "1.b"])
    end = fork_point(cps, None, "3")  # after the last checkpoint: the runs API's index
    assert (end.from_step, end.kept) == (3, ["0.a", "1.b", "2.c"])
    for step, index in [("9.z", None), (None, "1"), (None, "x"), (None, None)]:
        with pytest.raises(NotFoundError):
            fork_point(cps, step, index)
    outputs = {"0.a": 1, "1.b": {"x": 1}, "2.c": 3}
    edited = changed_outputs('{"0.a": 1, "1.b": {"x": 2}}', point.kept, outputs)
    assert edited == {"1.b": {"x": 2}}  # 0.a is unchanged: not sent
    assert changed_outputs("  ", point.kept, outputs) == {}
    problems = {
        '{"2.c": 4}': "fork.not_kept",  # 2.c runs again: it is not kept
        '"text"': "fork.not_object",
        "{'a': 1}": "fork.bad_json",
        json.dumps({f"k{i}": i for i in range(1001)}): "fork.too_many",
    }
    for text, ui in problems.items():
        with pytest.raises(InputValidationError) as caught:
            changed_outputs(text, point.kept, outputs)
        assert caught.value.details["ui"] == ui, text
    assert parse_input("") == (False, None)
    assert parse_input(' {"amount": 3} ') == (True, {"amount": 3})


def test_checkpoint_order_is_the_runners_from_the_log_or_from_typed_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lumos_ray.store import open_store
    from lumos_ray.workflows._forks import ordered_checkpoints

    monkeypatch.setenv("LUMOS_STORE_URL", f"sqlite:///{tmp_path}/runs.db")
    store = open_store(tenant_id="acme")
    store.create_run("r", "wf", "v1", {})
    # Restored first (a fork), then other events past a page of the log, then steps
    # finishing out of path order, one of them finishing twice (a retried write).
    store.append_events("r", [("step_restored", {"step": "9.kept"})])
    store.append_events("r", [("tick", {"i": i}) for i in range(1200)])
    for path in ("3.c", "1.a", "2.b"):
        store.save_checkpoint("r", path, path.upper(), [("step_finished", {"step": path})])
    store.append_events("r", [("input_received", {"step": "3.c"})])
    store.save_checkpoint("r", "9.kept", 9)
    outputs = store.load_checkpoints("r")
    want = [(c["index"], c["path"], c["seq"]) for c in ordered_checkpoints(store, "r")]
    assert [p for _, p, _ in want] == ["9.kept", "3.c", "1.a", "2.b"]
    log = store.read_events("r", 0, 10_000)
    for rows in (
        _data.checkpoint_rows(store, "r", outputs),
        _data.checkpoint_rows(store, "r", outputs, log),
    ):
        assert [(c["index"], c["path"], c["seq"]) for c in rows] == want
        assert all(isinstance(c["ts"], float) for c in rows)
