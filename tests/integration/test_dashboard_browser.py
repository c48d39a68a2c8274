"""The dashboard in a real browser (issue 16, "Must show"): headless Debian chromium,
driven by Playwright through ``executable_path``, against a real gateway app (platform
on: tenants, hashed keys, roles) on the session's Ray cluster and store, running the
shipped ``approval`` workflow (it suspends for a human's approval).

A developer signs in with a key, sees a run the test started, opens it, sees its steps
and its events arriving live, resumes a suspended run through the typed form (the run
then finishes), forks the finished run from a checkpoint with an edited output and
replays the fork. A viewer sees no resume button and gets 403 from the API and from the
dashboard's action route. A Chinese browser gets the Chinese catalog.

Screenshots are kept under ``$LUMOS_TEST_ARTIFACTS`` (default: a temporary folder;
the path is printed). The app is deployed under ``/dashtest`` on the Serve that runs
already, or on a free port of its own (the shape of test_tenant_isolation.py).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TENANT = "dash-ui"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def artifacts() -> Path:
    where = os.environ.get("LUMOS_TEST_ARTIFACTS") or tempfile.mkdtemp(prefix="lumos-dash-")
    path = Path(where) / "dashboard"
    path.mkdir(parents=True, exist_ok=True)
    print(f"\ndashboard screenshots: {path}")
    return path


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("Debian's chromium is not installed: run `make install` (make chromium).")
    return found


@pytest.fixture(scope="module")
def env(
    ray_cluster: Any, lumos_home: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    from ray import serve

    from lumos_ray import serve as lserve
    from lumos_ray.platform import Platform
    from lumos_ray.serve import GatewayConfig, ServeConfig, ServedEmbeddingConfig
    from lumos_ray.serve._app import _serve_running, _start_serve, _state_file, gateway_deployment

    work = tmp_path_factory.mktemp("dash")
    p = Platform()  # the session's store
    p.create_tenant(TENANT)
    keys = {
        "dev": p.create_key(TENANT, "developer").secret_shown_once,
        "viewer": p.create_key(TENANT, "viewer").secret_shown_once,
    }
    port = _free_port()
    cfg = ServeConfig(
        app_name="lumos-serve-dashtest",
        gateway=GatewayConfig(port=port, num_replicas=1, platform=True, auth_cache_s=0),
        embeddings=ServedEmbeddingConfig(enabled=False),
        adapters_dir=str(work / "adapters"),
    )
    if _serve_running():  # keeps the port it was started with: find it
        state = json.loads(_state_file().read_text())
        base = str(state["url"]).removesuffix("/v1")
    else:
        _start_serve(cfg)
        base = f"http://127.0.0.1:{port}"
    serve.run(gateway_deployment(cfg, {}, None), name=cfg.app_name, route_prefix="/dashtest")
    url = base + "/dashtest"
    deadline = time.monotonic() + 120
    last = ""
    while True:
        try:
            r = httpx.get(url + "/v1/models", headers=_h(keys["dev"]), timeout=5)
            if r.status_code == 200:
                break
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        assert time.monotonic() < deadline, f"the test gateway at {url} never answered: {last}"
        time.sleep(0.5)
    yield {"url": url, "keys": keys, "platform": p}
    lserve.stop(cfg.app_name)


def _start(env: dict[str, Any], amount: int) -> str:
    r = httpx.post(
        env["url"] + "/v1/workflows/approval/runs",
        json={"input": {"amount": amount}},
        headers=_h(env["keys"]["dev"]),
        timeout=120,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _wait_status(env: dict[str, Any], run_id: str, want: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        r = httpx.get(f"{env['url']}/v1/runs/{run_id}", headers=_h(env["keys"]["dev"]), timeout=60)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["status"] == want:
            return body
        assert time.monotonic() < deadline, f"run {run_id} is {body['status']}, not {want}"
        time.sleep(0.2)


@pytest.fixture
def browser(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # chromium refuses root otherwise
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, headless=True, args=args)
        try:
            yield b
        finally:
            b.close()


def _login(page: Any, url: str, key: str) -> None:
    page.goto(url + "/ui/runs")
    page.wait_for_selector("#login-form")  # redirected: no session yet
    page.fill("#key", key)
    page.click("#login-submit")
    page.wait_for_selector("#run-filters")


def test_developer_signs_in_follows_a_run_live_and_resumes_it_through_the_form(
    env: dict[str, Any], browser: Any, artifacts: Path
) -> None:
    url = env["url"]
    first = _start(env, 120)
    second = _start(env, 7)
    _wait_status(env, first, "suspended")
    _wait_status(env, second, "suspended")
    ctx = browser.new_context(locale="en-US")
    page = ctx.new_page()
    _login(page, url, env["keys"]["dev"])
    page.screenshot(path=str(artifacts / "01-runs.png"), full_page=True)
    assert page.locator(f'a.run-link:text-is("{first}")').count() == 1

    # Open the run: its steps, its events so far, the typed form of the waiting step.
    page.click(f'a.run-link:text-is("{first}")')
    page.wait_for_selector("#resume-form")
    assert page.locator('li.step[data-step="0.fee"]').count() == 1
    assert "run_suspended" in page.inner_text("#events")
    assert "Pay 120" in page.inner_text("#resume-prompt")
    page.screenshot(path=str(artifacts / "02-run-suspended.png"), full_page=True)

    # Live: resumed elsewhere (the API), the open page receives the new events.
    other = ctx.new_page()
    other.goto(f"{url}/ui/runs/{second}")
    other.wait_for_selector("#resume-form")
    r = httpx.post(
        f"{url}/v1/runs/{second}/resume",
        json={"input": {"approved": True, "note": "resumed through the API"}},
        headers=_h(env["keys"]["dev"]),
        timeout=60,
    )
    assert r.status_code == 200, r.text
    other.wait_for_selector("#events tr.new >> text=input_received", timeout=30_000)
    other.screenshot(path=str(artifacts / "03-live-events.png"), full_page=True)
    # The stream's end refreshes the steps: the run's final state; the stale form is gone.
    other.wait_for_selector("#run-status.st-succeeded", timeout=30_000)
    assert other.locator("#resume-form").count() == 0
    other.close()
    page.bring_to_front()  # a background tab is not rendered (its screenshot would wait)

    # Resume through the form: tick "approved", write a note, submit.
    page.check("#f-approved")
    page.fill("#f-note", "paid from the dashboard")
    page.click("#resume-submit")
    page.wait_for_selector("#run-status.st-succeeded", timeout=60_000)
    page.screenshot(path=str(artifacts / "04-run-finished.png"), full_page=True)
    done = _wait_status(env, first, "succeeded")
    assert done["output"]["approved"] is True
    assert float(done["output"]["total"]) == pytest.approx(122.4)
    assert page.locator("#resume-form").count() == 0

    # Its trace as a waterfall: the session's processes write spans as JSON lines.
    page.click("#trace-link")
    page.wait_for_selector("#waterfall")
    assert page.locator("#waterfall tr.span").count() >= 2
    page.screenshot(path=str(artifacts / "07-trace.png"), full_page=True)

    # Fork the finished run from its last step with the fee edited: the new run keeps
    # the checkpoints before that step (the edited fee, the approval) and adds again.
    page.goto(f"{url}/ui/runs/{first}")
    rows = page.locator("#checkpoints tr.checkpoint[data-step]")
    steps = [str(rows.nth(i).get_attribute("data-step")) for i in range(rows.count())]
    total = next(p for p in steps if p.endswith("total"))
    page.click(f'tr.checkpoint[data-step="{total}"] a.fork-link')
    page.wait_for_selector("#fork-form")
    kept = json.loads(page.input_value("#fork-state"))
    fee = next(p for p in kept if p.endswith("fee"))
    assert float(kept[fee]) == pytest.approx(2.4)
    page.fill("#fork-state", json.dumps({**kept, fee: 10}))
    page.screenshot(path=str(artifacts / "09-fork-form.png"), full_page=True)
    with page.expect_navigation():
        page.click("#fork-submit")
    forked = page.inner_text("#run-id")
    assert forked != first
    assert float(_wait_status(env, forked, "succeeded")["output"]["total"]) == pytest.approx(130)
    page.reload()  # the page lists the checkpoints there were when it loaded
    page.screenshot(path=str(artifacts / "10-forked-run.png"), full_page=True)
    # Replay the fork from the same step: its kept checkpoints hold the edited fee.
    with page.expect_navigation():
        page.click(f'tr.checkpoint[data-step="{total}"] button.replay-submit')
    replayed = page.inner_text("#run-id")
    assert replayed not in (first, forked)
    assert float(_wait_status(env, replayed, "succeeded")["output"]["total"]) == pytest.approx(130)
    ctx.close()


def test_viewer_sees_no_actions_and_is_refused_but_a_developer_may_cancel(
    env: dict[str, Any], browser: Any, artifacts: Path
) -> None:
    url = env["url"]
    run_id = _start(env, 5)
    _wait_status(env, run_id, "suspended")
    ctx = browser.new_context(locale="en-US")
    page = ctx.new_page()
    _login(page, url, env["keys"]["viewer"])
    page.goto(f"{url}/ui/runs/{run_id}")
    page.wait_for_selector("#no-actions")
    assert page.locator("#resume-form").count() == 0
    assert page.locator("#cancel-form").count() == 0
    page.screenshot(path=str(artifacts / "05-viewer.png"), full_page=True)
    # The API with the viewer's key: 403.
    r = httpx.post(
        f"{url}/v1/runs/{run_id}/resume",
        json={"input": {"approved": True}},
        headers=_h(env["keys"]["viewer"]),
        timeout=60,
    )
    assert r.status_code == 403, r.text
    # The dashboard's own action route, posted from the page with its token: 403 too.
    status = page.evaluate(
        """async (path) => {
            const token = document.querySelector('input[name=csrf]').value;
            const body = new URLSearchParams({csrf: token, approved: 'on'});
            const r = await fetch(path, {method: 'POST', body, redirect: 'manual'});
            return r.status;
        }""",
        f"{urlsplit(url).path}/ui/runs/{run_id}/resume",
    )
    assert status == 403
    assert _wait_status(env, run_id, "suspended")["status"] == "suspended"
    ctx.close()
    # A developer may: cancel it from its page.
    ctx = browser.new_context(locale="en-US")
    page = ctx.new_page()
    _login(page, url, env["keys"]["dev"])
    page.goto(f"{url}/ui/runs/{run_id}")
    page.click("#cancel-submit")
    page.wait_for_selector("#run-status.st-cancelled", timeout=60_000)
    assert _wait_status(env, run_id, "cancelled")["status"] == "cancelled"
    assert page.locator("#cancel-form").count() == 0
    ctx.close()


def test_a_chinese_browser_gets_the_chinese_dashboard(
    env: dict[str, Any], browser: Any, artifacts: Path
) -> None:
    ctx = browser.new_context(locale="zh-CN")
    page = ctx.new_page()
    page.goto(env["url"] + "/ui/runs")
    page.wait_for_selector("#login-form")
    assert "登录" in page.inner_text("h1")
    page.fill("#key", env["keys"]["dev"])
    page.click("#login-submit")
    page.wait_for_selector("#run-filters")
    assert page.inner_text("h1") == "运行"
    assert "筛选" in page.inner_text("#run-filters")
    page.screenshot(path=str(artifacts / "06-zh.png"), full_page=True)
    # The switch overrides the browser's language.
    page.click("#lang-en")
    page.wait_for_selector("#run-filters")
    assert page.inner_text("h1") == "Runs"
    ctx.close()


def test_usage_page_draws_the_tenants_metered_days(
    env: dict[str, Any], browser: Any, artifacts: Path
) -> None:
    env["platform"].record_usage(TENANT, prompt_tokens=1234, completion_tokens=567)
    ctx = browser.new_context(locale="en-US")
    page = ctx.new_page()
    _login(page, env["url"], env["keys"]["viewer"])
    page.goto(env["url"] + "/ui/usage")
    page.wait_for_selector("#usage-chart canvas")  # uPlot drew the chart
    assert page.locator("#usage-table tbody tr").count() >= 1
    assert "Prompt tokens" in page.inner_text("#usage-chart")  # the series legend
    page.screenshot(path=str(artifacts / "08-usage.png"), full_page=True)
    ctx.close()
