"""``rag_search`` asks the calling agent's tenant's router, never the process's default
tenant: the collection name comes from the model, the tenant must not. Ray is not
under test: the runtime lookups are replaced by a recorder of the actor names asked."""

from __future__ import annotations

from typing import Any

import pytest

from lumos_ray.rag import _tool
from lumos_ray.rag._names import router_actor_name
from lumos_ray.tools import ToolContext


class _Router:
    class search:  # mirrors a Ray actor method
        @staticmethod
        async def remote(*_: Any, **__: Any) -> list[dict[str, Any]]:
            return []


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from lumos_ray import runtime

    names: list[str] = []

    def get_actor(name: str) -> Any:
        names.append(name)
        return _Router()

    monkeypatch.setattr(runtime, "is_connected", lambda: True)
    monkeypatch.setattr(runtime, "get_actor", get_actor)
    monkeypatch.setenv("LUMOS_TENANT", "default")
    _tool._handles.clear()
    yield names
    _tool._handles.clear()


async def test_the_agents_tenant_picks_the_router(asked: list[str]) -> None:
    args = {"query": "q", "collection": "docs"}
    await _tool.rag_search.acall(args, ToolContext(tenant="acme"))
    await _tool.rag_search.acall(args, ToolContext(tenant="globex"))
    assert asked == [router_actor_name("docs", "acme"), router_actor_name("docs", "globex")]


async def test_outside_an_agent_the_process_tenant_is_used(asked: list[str]) -> None:
    await _tool.rag_search.acall({"query": "q", "collection": "docs"})
    assert asked == [router_actor_name("docs", "default")]
