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
