from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True)
def _unit_tests_never_start_ray():
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
        pytest.fail("unit tests must not start Ray; move this test to tests/integration")
