"""What a new worker process of the embedded cluster starts with (issue 17: a dedicated
agent's actor start): compiled bytecode is cached even when the driver's environment
turns bytecode writing off, in a folder under LUMOS_HOME, not next to the sources."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import ray

from lumos_ray import runtime


@ray.remote(num_cpus=0)
def _bytecode_settings() -> tuple[bool, str | None, str]:
    """The worker's bytecode flags, and where it cached a lumos module it imported."""
    import importlib.util

    import lumos_ray.runtime._worker_bytecode as mod

    return (
        sys.dont_write_bytecode,
        sys.pycache_prefix,
        importlib.util.cache_from_source(mod.__file__),
    )


def test_embedded_cluster_workers_cache_bytecode_under_the_home(
    ray_cluster: runtime.RuntimeInfo, lumos_home: str
) -> None:
    if not ray_cluster.embedded:
        pytest.skip("a cluster given with --ray-address has its operator's environment")
    # The session cluster started with LUMOS_WORKER_PYCACHE=<home>/pycache (conftest):
    # its workers write bytecode there, whatever the driver's PYTHONDONTWRITEBYTECODE.
    expected = Path(os.environ["LUMOS_WORKER_PYCACHE"]).resolve()
    assert expected.is_relative_to(Path(lumos_home).resolve())
    dont_write, prefix, compiled = ray.get(_bytecode_settings.remote(), timeout=120)
    assert dont_write is False
    assert prefix == str(expected)
    # The worker compiled the lumos module it imported into that folder.
    assert Path(compiled).is_relative_to(expected)
    assert Path(compiled).is_file()
