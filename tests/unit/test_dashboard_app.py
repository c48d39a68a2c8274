"""The dashboard (/ui) on the real gateway app in-process (no Ray): login with a key,
session cookie flags, CSP, tenant and role scoping, CSRF (Origin + token), runs list
filters and keyset pages, a run's steps and resume form, escaping, languages, the
`lumos dev` banner. Runs are written straight into a SQLite store; what needs a
runner actor (resume, cancel, live events) is covered by
tests/integration/test_dashboard_browser.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lumos_ray.serve import GatewayConfig, ServeConfig
from lumos_ray.serve._config import ApiKeySpec
from lumos_ray.serve._gateway import _GATEWAY, Gateway, build_app
from lumos_ray.store import open_store

DEV = "sk-dash-developer"
VIEW = "sk-dash-viewer"
OTHER = "sk-dash-other-tenant"
ORIGIN = "http://testserver"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LUMOS_HOME", str(tmp_path))
    monkeypatch.setenv("LUMOS_STORE_URL", f"sqlite:///{tmp_path}/runs.db")
    return tmp_path


@pytest.fixture
def client(home: Path) -> Iterator[TestClient]:
    cfg = ServeConfig(
        gateway=GatewayConfig(
            api_keys=[
                ApiKeySpec(key=DEV, tenant="acme", role="developer"),
                ApiKeySpec(key=VIEW, tenant="acme", role="viewer"),
                ApiKeySpec(key=OTHER, tenant="globex", role="admin"),
            ],
            api_keys_env=None,
        ),
        adapters_dir=str(home / "adapters"),
    )
    Gateway(cfg.model_dump_json(), llm_handles={})
    with TestClient(build_app(), follow_redirects=False) as c:
        yield c
    _GATEWAY.clear()


def _login(c: TestClient, key: str) -> None:
    r = c.post("/ui/login", data={"key": key, "next": "/ui/runs"}, headers={"Origin": ORIGIN})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/ui/runs"


def _suspended_run(tenant: str = "acme", run_id: str = "run-wait", workflow: str = "approval"):
    store = open_store(tenant_id=tenant)
    store.create_run(run_id, workflow, "v1", {"amount": 10})
    store.append_events(
        run_id,
        [
            ("run_started", {"workflow": workflow}),
            ("step_started", {"step": "0.fee", "kind": "tool", "attempt": 1}),
            ("step_finished", {"step": "0.fee", "attempt": 1}),
            ("run_suspended", {"step": "approve", "prompt": "Pay 10?"}),
        ],
    )
    store.save_checkpoint(run_id, "0.fee", 0.2)
    schema = {
        "type": "object",
        "required": ["approved"],
        "properties": {"approved": {"type": "boolean"}, "note": {"type": "string"}},
    }
    store.set_status(
        run_id, "suspended", suspended={"step": "approve", "prompt": "Pay 10?", "schema": schema}
    )
    return store


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert m, html[:2000]
    return m.group(1)


def test_pages_need_a_session_and_login_checks_the_key_like_the_api(client: TestClient) -> None:
    r = client.get("/ui/runs")
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?")
    r = client.post("/ui/login", data={"key": "sk-wrong-key"}, headers={"Origin": ORIGIN})
    assert r.status_code == 401 and "not valid" in r.text
    assert "lumos_session" not in r.headers.get("set-cookie", "")
    r = client.post("/ui/login", data={"key": DEV}, headers={"Origin": ORIGIN})
    assert r.status_code == 303
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
    page = client.get("/ui/runs")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "'unsafe-inline'" not in page.headers["content-security-policy"]
    assert "Tenant acme" in page.text
    # The API itself still wants its header: the cookie is not an API credential.
    assert client.get("/v1/runs").status_code == 401


def test_login_from_another_origin_is_refused(client: TestClient) -> None:
    r = client.post("/ui/login", data={"key": DEV}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert "lumos_session" not in r.headers.get("set-cookie", "")


def test_runs_list_is_the_tenants_filtered_and_paged_by_keyset(client: TestClient) -> None:
    acme = open_store(tenant_id="acme")
    for i in range(30):
        acme.create_run(f"run-{i:03d}", "alpha" if i % 2 else "beta", "v1", {})
    open_store(tenant_id="globex").create_run("run-globex", "alpha", "v1", {})
    _login(client, VIEW)
    first = client.get("/ui/runs", params={"limit": 25}).text
    ids = re.findall(r'class="run-link" href="/ui/runs/([^"]+)"', first)
    assert len(ids) == 25 and ids[0] == "run-029" and "run-globex" not in first
    nxt = re.search(r'href="([^"]+)" id="next-page"', first)
    assert nxt
    second = client.get(nxt.group(1).replace("&amp;", "&")).text
    rest = re.findall(r'class="run-link" href="/ui/runs/([^"]+)"', second)
    assert rest == [f"run-{i:03d}" for i in range(4, -1, -1)]
    assert 'id="next-page"' not in second
    beta = client.get("/ui/runs", params={"workflow": "beta", "limit": 100}).text
    assert len(re.findall(r'class="run-link"', beta)) == 15
    none = client.get("/ui/runs", params={"status": "failed"}).text
    assert 'class="run-link"' not in none
    # Another tenant's run is not found, whatever the id.
    assert client.get("/ui/runs/run-globex").status_code == 404


def test_run_page_shows_steps_and_the_typed_resume_form_to_a_developer(
    client: TestClient,
) -> None:
    _suspended_run()
    _login(client, DEV)
    html = client.get("/ui/runs/run-wait").text
    assert 'data-step="0.fee"' in html and "0.2" in html  # the step and its output
    assert 'id="resume-form"' in html and 'id="cancel-form"' in html
    assert 'type="checkbox" name="approved"' in html and 'name="note"' in html
    assert 'data-stream="/ui/runs/run-wait/events"' in html


def test_a_viewer_sees_no_actions_and_gets_403_posting_them(client: TestClient) -> None:
    _suspended_run()
    _login(client, VIEW)
    html = client.get("/ui/runs/run-wait").text
    assert 'id="resume-form"' not in html and 'id="cancel-form"' not in html
    assert 'id="no-actions"' in html
    token = _csrf(html)  # the sign-out form's: a viewer has a valid token
    for action in ("resume", "cancel"):
        r = client.post(
            f"/ui/runs/run-wait/{action}",
            data={"csrf": token, "approved": "on"},
            headers={"Origin": ORIGIN},
        )
        assert r.status_code == 403, (action, r.status_code)
        assert "viewer" in r.text
    assert open_store(tenant_id="acme").get_run("run-wait")["status"] == "suspended"


def test_actions_need_same_origin_and_the_session_token(client: TestClient) -> None:
    _suspended_run()
    _login(client, DEV)
    token = _csrf(client.get("/ui/runs/run-wait").text)
    cases = [
        ({"csrf": token}, {"Origin": "http://evil.example"}),
        ({"csrf": token}, {}),  # neither Origin nor Referer
        ({"csrf": "0" * 40}, {"Origin": ORIGIN}),
        ({}, {"Origin": ORIGIN}),
    ]
    for data, headers in cases:
        r = client.post("/ui/runs/run-wait/cancel", data=data, headers=headers)
        assert r.status_code == 403, (data, headers, r.status_code)
    assert open_store(tenant_id="acme").get_run("run-wait")["status"] == "suspended"


def test_stored_text_is_escaped_and_script_data_is_json_escaped(client: TestClient) -> None:
    evil = "</script><script>alert(1)</script>"
    store = open_store(tenant_id="acme")
    store.create_run("run-evil", "<img src=x onerror=alert(1)>", "v1", {"note": evil})
    _login(client, DEV)
    listing = client.get("/ui/runs").text
    assert "<img src=x" not in listing and "&lt;img src=x onerror=alert(1)&gt;" in listing
    page = client.get("/ui/runs/run-evil").text
    assert "<script>alert(1)" not in page
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in page


def test_chinese_from_accept_language_and_from_the_switch(client: TestClient) -> None:
    r = client.get("/ui/login", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"})
    assert "登录" in r.text and 'lang="zh-CN"' in r.text
    assert "Sign in" in client.get("/ui/login", headers={"Accept-Language": "en-US"}).text
    _login(client, DEV)
    r = client.get("/ui/lang/zh", params={"next": "/ui/runs"})
    assert r.status_code == 303 and r.headers["location"] == "/ui/runs"
    page = client.get("/ui/runs", headers={"Accept-Language": "en"}).text
    assert "运行" in page and "筛选" in page
    # An open redirect through the switch is refused.
    r = client.get("/ui/lang/en", params={"next": "//evil.example/x"})
    assert r.headers["location"] == "/ui/runs"


def test_dev_status_errors_show_on_every_page(client: TestClient, home: Path) -> None:
    status = {
        "ok": False,
        "errors": [{"file": "tools/add.py", "line": 7, "message": "invalid syntax"}],
        "reloaded_at": "2026-12-01T20:00:00Z",
    }
    (home / "dev-status.json").write_text(json.dumps(status))
    assert "tools/add.py:7" in client.get("/ui/login").text
    _login(client, DEV)
    assert "tools/add.py:7" in client.get("/ui/runs").text
    (home / "dev-status.json").write_text(json.dumps({**status, "ok": True}))
    assert 'id="dev-errors"' not in client.get("/ui/runs").text


def test_static_assets_are_an_allowlist(client: TestClient) -> None:
    r = client.get("/ui/static/vendor/htmx.min.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert client.get("/ui/static/vendor/uPlot.iife.min.js").status_code == 200
    assert client.get("/ui/static/_routes.py").status_code == 404
    assert client.get("/ui/static/vendor%2F..%2F..%2F_routes.py").status_code == 404
    assert client.get("/ui/static/messages/en.json").status_code == 404


def test_jobs_page_says_how_to_list_jobs_when_no_jobs_api_is_set(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LUMOS_JOBS_ADDRESS", raising=False)
    _login(client, VIEW)
    page = client.get("/ui/jobs")
    assert page.status_code == 200 and "LUMOS_JOBS_ADDRESS" in page.text
    assert client.get("/ui/jobs/lumos-ft-x-1").status_code == 404


def test_rag_page_lists_only_the_tenants_collections(client: TestClient, home: Path) -> None:
    for tenant, name in [("acme", "handbook"), ("globex", "secret-plans")]:
        folder = home / "rag" / tenant / name
        folder.mkdir(parents=True)
        (folder / "collection.json").write_text("{}")
    _login(client, VIEW)
    page = client.get("/ui/rag").text
    assert "handbook" in page and "secret-plans" not in page
    r = client.get("/ui/rag", params={"name": "secret-plans", "q": "plans"})
    assert r.status_code == 404


def test_threads_pages_show_the_tenants_threads_only(client: TestClient) -> None:
    said = [{"role": "user", "content": "<b>hi</b>"}, {"role": "assistant", "content": "ok"}]
    open_store(tenant_id="acme").append_messages_many("helper", [("t-1", said)])
    open_store(tenant_id="globex").append_messages_many(
        "helper", [("t-secret", [{"role": "user", "content": "the globex secret"}])]
    )
    _login(client, VIEW)
    listing = client.get("/ui/threads").text
    assert "t-1" in listing and "t-secret" not in listing
    thread = client.get("/ui/threads/helper/t-1").text
    assert "&lt;b&gt;hi&lt;/b&gt;" in thread and "assistant" in thread
    assert client.get("/ui/threads/helper/t-secret").status_code == 404
    assert "No adapters" in client.get("/ui/adapters").text


# -- replay and fork from the run page -------------------------------------------------
def _finished_run(tenant: str = "acme", run_id: str = "run-done"):
    """A finished run whose parallel branches finished out of path order (b before a):
    its checkpoints' order is the order their steps finished, not their paths'."""
    store = open_store(tenant_id=tenant)
    store.create_run(run_id, "approval", "v1", {"amount": 10})
    store.append_events(run_id, [("run_started", {"workflow": "approval"})])
    for path, output in [("0.fee", 0.2), ("1.par.b", {"b": 2}), ("1.par.a", {"a": 1})]:
        store.append_events(run_id, [("step_started", {"step": path, "attempt": 1})])
        store.save_checkpoint(run_id, path, output, [("step_finished", {"step": path})])
    store.set_status(run_id, "succeeded", output={"total": 10.2})
    return store


def _tenant_run_ids(tenant: str = "acme") -> list[str]:
    rows = open_store(tenant_id=tenant).runs_page(limit=100, newest_first=True)
    return sorted(r["id"] for r in rows)


def test_run_page_lists_checkpoints_in_the_runners_order_with_replay_and_fork(
    client: TestClient,
) -> None:
    from lumos_ray.workflows._forks import ordered_checkpoints

    store = _finished_run()
    _login(client, DEV)
    html = client.get("/ui/runs/run-done").text
    shown = re.findall(r'<tr class="checkpoint" data-step="([^"]+)"', html)
    # The order replay and fork count in (the runner's), not the paths' order.
    assert shown == [c["path"] for c in ordered_checkpoints(store, "run-done")]
    assert shown == ["0.fee", "1.par.b", "1.par.a"]
    # Each row: when its step finished, a replay button; a fork link where a
    # checkpoint is kept (not on the first row); a last row "after the last one".
    finished = store.read_events("run-done", 0, 100, type="step_finished")
    from lumos_ray.serve._dashboard._render import environment

    when = environment().filters["when"]
    assert all(when(ev["ts"]) in html for ev in finished)
    assert html.count('class="inline replay-form"') == 4
    forks = re.findall(r'class="fork-link"(?: id="fork-end")? href="([^"]+)"', html)
    assert forks == [
        "/ui/runs/run-done/fork?step=1.par.b",
        "/ui/runs/run-done/fork?step=1.par.a",
        "/ui/runs/run-done/fork?index=3",
    ]
    assert 'id="no-replay"' not in html
    # A run made by a fork links back to the run and step it came from.
    store.create_run("run-forked", "approval", "v1", {"amount": 10})
    origin = {"from_run": "run-done", "from_step": "1.par.a", "kept": 2, "edited": []}
    store.append_events("run-forked", [("run_forked", origin)])
    forked = client.get("/ui/runs/run-forked").text
    assert re.search(r'id="run-origin">[^<]*1\.par\.a[^<]*<a href="/ui/runs/run-done">', forked)


def test_a_viewer_sees_no_replay_or_fork_and_gets_403_using_them(client: TestClient) -> None:
    _finished_run()
    _login(client, VIEW)
    html = client.get("/ui/runs/run-done").text
    assert 'data-step="1.par.a"' in html  # the checkpoints are listed
    assert "replay-form" not in html and "fork-link" not in html
    assert 'id="no-replay"' in html
    token = _csrf(html)
    r = client.post(
        "/ui/runs/run-done/replay",
        data={"csrf": token, "step": "0.fee"},
        headers={"Origin": ORIGIN},
    )
    assert r.status_code == 403 and "developer" in r.text
    r = client.post(
        "/ui/runs/run-done/fork",
        data={"csrf": token, "step": "1.par.a", "state": "{}"},
        headers={"Origin": ORIGIN},
    )
    assert r.status_code == 403
    assert client.get("/ui/runs/run-done/fork", params={"step": "1.par.a"}).status_code == 403
    assert _tenant_run_ids() == ["run-done"]


def test_replay_and_fork_need_same_origin_and_the_session_token(client: TestClient) -> None:
    _finished_run()
    _login(client, DEV)
    token = _csrf(client.get("/ui/runs/run-done").text)
    for action in ("replay", "fork"):
        for data, headers in [
            ({"csrf": token, "step": "0.fee"}, {"Origin": "http://evil.example"}),
            ({"step": "0.fee"}, {"Origin": ORIGIN}),
        ]:
            r = client.post(f"/ui/runs/run-done/{action}", data=data, headers=headers)
            assert r.status_code == 403, (action, data, headers)
    assert _tenant_run_ids() == ["run-done"]


def test_fork_form_holds_the_kept_outputs_and_the_input(client: TestClient) -> None:
    _finished_run()
    _finished_run("globex", "run-globex-done")
    _login(client, DEV)
    r = client.get("/ui/runs/run-done/fork", params={"step": "1.par.a"})
    assert r.status_code == 200
    area = re.search(r'<textarea name="state" id="fork-state"[^>]*>([^<]*)</textarea>', r.text)
    assert area
    kept = json.loads(area.group(1).replace("&#34;", '"').replace("&quot;", '"'))
    assert kept == {"0.fee": 0.2, "1.par.b": {"b": 2}}  # the checkpoints before 1.par.a
    assert 'name="step" value="1.par.a"' in r.text and 'enctype="multipart/form-data"' in r.text
    assert "&#34;amount&#34;: 10" in r.text  # the run input, editable
    end = client.get("/ui/runs/run-done/fork", params={"index": "3"})
    assert end.status_code == 200 and 'name="index" value="3"' in end.text
    # A checkpoint the run does not have, an index that is not "after the last", or
    # another tenant's run: not found.
    assert client.get("/ui/runs/run-done/fork", params={"step": "9.nope"}).status_code == 404
    assert client.get("/ui/runs/run-done/fork", params={"index": "1"}).status_code == 404
    r = client.get("/ui/runs/run-globex-done/fork", params={"step": "1.par.a"})
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("state", "new_input", "says", "says_zh"),
    [
        ("{not json", "", "not valid JSON", "不是有效的 JSON"),
        ("[1, 2]", "", "must be a JSON object", "必须是 JSON 对象"),
        ('{"1.par.a": 5}', "", "cannot be edited", "无法编辑"),
        ("{" + " " * 40_000 + "}", "", "longer than 40000", "超过 40000"),
        ("{}", '{"amount": ', "not valid JSON", "不是有效的 JSON"),
    ],
)
def test_a_bad_fork_is_explained_on_the_form_which_keeps_the_text(
    client: TestClient, state: str, new_input: str, says: str, says_zh: str
) -> None:
    _finished_run()
    _login(client, DEV)
    token = _csrf(client.get("/ui/runs/run-done").text)
    fields = {"csrf": token, "step": "1.par.a", "state": state, "input": new_input}
    for lang, text in (("en", says), ("zh", says_zh)):
        client.cookies.set("lumos_lang", lang)
        r = client.post(
            "/ui/runs/run-done/fork",
            files={k: (None, v) for k, v in fields.items()},  # multipart, as the page sends
            headers={"Origin": ORIGIN},
        )
        assert r.status_code == 422, r.text[:500]
        error = re.search(r'id="fork-error" role="alert"><p>([^<]*)</p>', r.text)
        assert error and text in error.group(1), (lang, error and error.group(1))
        assert 'id="fork-form"' in r.text
        kept = state if len(state) < 100 else state[:50]
        assert kept.replace('"', "&#34;") in r.text  # the user's text, escaped, kept
    client.cookies.delete("lumos_lang")
    assert _tenant_run_ids() == ["run-done"]  # no run was started


# -- federated runs on the jobs page ---------------------------------------------------
def _federated_run(name: str, rounds: list[tuple[float, float | None]], *, finish: bool) -> None:
    """A federated run written by the federated code's own recorder (the store events
    it writes as the process's tenant, LUMOS_TENANT)."""
    from lumos_ray.federated._metrics import RoundRecord, RunRecorder

    rec = RunRecorder(name, config={"app": "tabular", "rounds": len(rounds)}, mode="simulation")
    for i, (loss, acc) in enumerate(rounds, start=1):
        rec.record(
            RoundRecord(
                round=i,
                sites_sampled=3,
                sites_replied=3,
                sites_failed=0,
                sites_rejected=0,
                bytes_sent=1000,
                bytes_received=900,
                duration_s=0.5,
                global_loss=loss,
                global_accuracy=acc,
            )
        )
    if finish:
        rec.finish("succeeded", final={"global_loss": rounds[-1][0]})


def test_jobs_page_lists_the_tenants_federated_runs_with_rounds_and_curves(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LUMOS_JOBS_ADDRESS", raising=False)
    monkeypatch.setenv("LUMOS_TENANT", "acme")
    _federated_run("fed-done", [(0.9, 0.5), (0.6, None), (0.4, 0.8)], finish=True)
    _federated_run("fed-live", [(1.1, 0.3)], finish=False)
    monkeypatch.setenv("LUMOS_TENANT", "globex")
    _federated_run("fed-secret", [(0.5, 0.5)], finish=True)
    _login(client, VIEW)
    jobs = client.get("/ui/jobs").text
    table = re.search(r'<table class="list" id="federated-table">.*?</table>', jobs, re.S)
    assert table and "fed-secret" not in jobs
    rows = re.findall(r'class="fed-link" href="[^"]+">([^<]+)</a></td><td><span[^>]*>(\w+)<', jobs)
    assert rows == [("fed-live", "running"), ("fed-done", "succeeded")]  # newest first
    page = client.get("/ui/jobs/federated/fed-done")
    assert page.status_code == 200
    assert page.text.count('<tr class="fed-round">') == 3
    charts = {}
    for name in ("loss", "accuracy"):
        block = re.search(rf'id="fed-{name}-data">(.*?)</script>', page.text, re.S)
        assert block, name
        charts[name] = json.loads(block.group(1))
    assert charts["loss"]["steps"] == [1, 2, 3]
    assert charts["loss"]["series"] == {"global_loss": [0.9, 0.6, 0.4]}
    assert charts["accuracy"]["series"] == {"global_accuracy": [0.5, None, 0.8]}  # a gap
    assert charts["loss"]["labels"] == {"global_loss": "Global loss"}
    live = client.get("/ui/jobs/federated/fed-live").text
    assert 'id="fed-state" data-state="running"' in live
    assert live.count('<tr class="fed-round">') == 1
    # Another tenant's run, and one that does not exist: not found.
    assert client.get("/ui/jobs/federated/fed-secret").status_code == 404
    assert client.get("/ui/jobs/federated/nope").status_code == 404
