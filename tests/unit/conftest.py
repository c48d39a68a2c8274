from __future__ import annotations

import sys

import pytest

from tests._postgres import store_backends


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Store tests that take ``store_backend`` run once per backend (--store-backend)."""
    if "store_backend" in metafunc.fixturenames:
        metafunc.parametrize("store_backend", store_backends(metafunc.config))


@pytest.fixture(autouse=True)
def _unit_tests_never_start_ray():
    """Fail a unit test that starts Ray. (When the whole suite runs in one session the
    integration tier's cluster may already be up: only a start *by this test* counts.)"""
    ray = sys.modules.get("ray")
    was_up = ray is not None and ray.is_initialized()
    yield
    ray = sys.modules.get("ray")
    if not was_up and ray is not None and ray.is_initialized():
        ray.shutdown()
        pytest.fail("unit tests must not start Ray; move this test to tests/integration")
