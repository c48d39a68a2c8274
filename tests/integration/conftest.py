"""One real Ray cluster per test session; named actors cleaned between tests."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lumos_ray import runtime
from lumos_ray.config import LumosSettings

# Long-lived services that tests share on purpose (an engine takes ~1 min to load).
_KEEP_PREFIXES = ("SERVE_", "lumos-serve", "lumos-rag-shared")


@pytest.fixture(scope="session")
def lumos_home() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="lumos-test-") as home:
        yield home


@pytest.fixture(scope="session")
def ray_cluster(request: pytest.FixtureRequest, lumos_home: str) -> Iterator[runtime.RuntimeInfo]:
    address = request.config.getoption("--ray-address")
    os.environ["LUMOS_HOME"] = lumos_home
    # Workers cache bytecode in a folder of the home (the path form of the setting, so
    # test_worker_start checks the mechanism whether or not this machine turns bytecode
    # writing off; `make test` turns it back on).
    os.environ.setdefault("LUMOS_WORKER_PYCACHE", str(Path(lumos_home) / "pycache"))
    if request.config.getoption("--store-backend") == "postgresql":
        # The whole tier on a real PostgreSQL store (tests/_postgres.py).
        server = request.getfixturevalue("postgres_server")
        os.environ["LUMOS_STORE_URL"] = server.create_database("lumos_integration")
    os.environ.setdefault("LUMOS_TRACE_EXPORTER", f"jsonl:{lumos_home}/spans")
    # This process may have traced (with tracing off) in unit tests of the same session.
    from lumos_ray import tracing

    tracing.setup_tracing()
    # A secret the cluster's processes read from their environment at execution time
    # (tests check it never reaches the store). With --ray-address, export it there.
    os.environ.setdefault("LUMOS_TEST_MODEL_KEY", f"sk-lumos-test-{os.urandom(8).hex()}")
    # Keys go only to base URLs their environment binds them to: the test keys to the
    # test servers on this machine (any port: they listen on free ports).
    os.environ.setdefault(
        "LUMOS_MODEL_KEY_URLS",
        "LUMOS_TEST_MODEL_KEY=http://127.0.0.1:*;LUMOS_TEST_GATEWAY_KEY=http://127.0.0.1:*",
    )
    settings = LumosSettings.from_env(address=address, num_cpus=None if address else 8)
    # Ray 2.60's raylet gives its dashboard agent a fixed 15 s to start and aborts the
    # node otherwise; on a saturated 2-core machine that can fail one start. One failed
    # start would error every test of the session, so try again (twice at most).
    for attempt in (1, 2, 3):
        try:
            info = runtime.connect(settings=settings)
            break
        except Exception:
            runtime.shutdown()
            if attempt == 3:
                raise
            time.sleep(5)
    yield info
    runtime.shutdown()


@pytest.fixture(autouse=True)
def _clean_named_actors(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "ray_cluster" not in request.fixturenames:
        return
    import ray

    if not ray.is_initialized():
        return
    for entry in ray.util.list_named_actors(all_namespaces=False):
        name = entry if isinstance(entry, str) else entry.get("name", "")
        if name.startswith(_KEEP_PREFIXES):
            continue
        try:
            ray.kill(ray.get_actor(name))
        except ValueError:
            pass
