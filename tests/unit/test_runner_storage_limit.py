"""A tenant at its plan's storage limit cannot start or fork runs through the runner,
whichever client asks (before, only the gateway checked, so the Python API and the CLI
were never refused).

The Runner here is the real one, used in-process (no Ray: a refused start never
reaches a step), over a real SQLite store and the real Platform with a plans file."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lumos_ray.errors import QuotaExceededError
from lumos_ray.platform import Platform
from lumos_ray.store import open_store
from lumos_ray.workflows._runner import Runner
from lumos_ray.workflows._serialize import definition_version

PLANS = (
    "default_plan: roomy\nplans:\n"
    "  tiny: {api_calls_per_month: null, concurrent_agents: 1, storage_bytes: 1000}\n"
    "  roomy: {api_calls_per_month: null, concurrent_agents: 1, storage_bytes: 100000000}\n"
)
# A human step first: the run suspends at once, nothing reaches Ray.
BODY = {
    "name": "noop",
    "steps": [{"id": "ok", "human": {"prompt": "go?", "schema": {"type": "boolean"}}}],
}
VERSION = definition_version(BODY)


async def _stop(runner: Runner) -> None:
    """Cancel what the runner started on this loop (lease keeper, scheduler, runs)."""
    pending = [t for t in (runner._keeper, runner._scheduling, *runner.tasks.values()) if t]
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


@pytest.fixture
def store_url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    (tmp_path / "plans.yaml").write_text(PLANS)
    saved = {k: os.environ.get(k) for k in ("LUMOS_STORE_URL", "LUMOS_PLANS_FILE")}
    os.environ["LUMOS_STORE_URL"] = url
    os.environ["LUMOS_PLANS_FILE"] = str(tmp_path / "plans.yaml")
    try:
        platform = Platform(url)
        platform.create_tenant("full", "tiny")
        platform.create_tenant("roomy", "roomy")
        yield url
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def test_a_tenant_at_its_storage_limit_cannot_start_or_fork_runs(store_url: str) -> None:
    # 5 KB of stored run input: over the tiny plan's 1,000 bytes.
    open_store(tenant_id="full").create_run("run-old", "noop", "v0", {"x": "y" * 5000})
    runner = Runner(auto_recover=False, tenant="full")
    try:
        with pytest.raises(QuotaExceededError) as err:
            await runner.start("noop", VERSION, BODY, {})
        assert err.value.code == QuotaExceededError.code and err.value.fix
        assert "stores 5.1 kB" in err.value.message and "tiny plan allows" in err.value.message
        with pytest.raises(QuotaExceededError):
            await runner.fork("run-old", 0)
        assert [r["id"] for r in open_store(tenant_id="full").list_runs()] == ["run-old"]
    finally:
        await _stop(runner)


async def test_a_tenant_under_its_limit_starts_runs(store_url: str) -> None:
    runner = Runner(auto_recover=False, tenant="roomy")
    try:
        run_id = await runner.start("noop", VERSION, BODY, {})
        assert (await runner.wait(run_id, 30))["status"] == "suspended"
        assert open_store(tenant_id="roomy").get_run(run_id)["workflow"] == "noop"
    finally:
        await _stop(runner)
