"""Test tiers and the backend option.

- tests/unit: fast, never start Ray (a guard fixture fails any unit test that does).
- tests/integration: one real local Ray cluster per session (own temp dir, loopback),
  or the cluster given with ``--ray-address`` (Temporal-style: same suite, chosen
  backend).
"""

from __future__ import annotations

import pytest

from tests._postgres import make_store, postgres_server, store_url

# PostgreSQL server and store fixtures (tests/_postgres.py), one server per session.
__all__ = ["make_store", "postgres_server", "store_url"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--ray-address",
        default=None,
        help="Run integration tests against this Ray cluster instead of an embedded one.",
    )
    parser.addoption(
        "--store-backend",
        choices=("both", "sqlite", "postgresql"),
        default="both",
        help="Run-store backend(s): the store suite runs on each chosen one (default both); "
        "the integration cluster uses PostgreSQL only when `postgresql` is chosen.",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
