"""`lumos serve up` runs its embedded cluster's workers at normal priority."""

from __future__ import annotations

import pytest

from lumos_ray.serve._daemon import WORKER_NICENESS_ENV, serve_at_normal_priority


def test_an_embedded_serving_cluster_gets_workers_at_nice_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    monkeypatch.delenv(WORKER_NICENESS_ENV, raising=False)
    serve_at_normal_priority()
    assert os.environ[WORKER_NICENESS_ENV] == "0"


def test_a_niceness_the_operator_chose_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv(WORKER_NICENESS_ENV, "10")
    serve_at_normal_priority()
    assert os.environ[WORKER_NICENESS_ENV] == "10"
