"""``AgentActor.hosted`` runs a higher layer's work in the agent's actor (a durable run
of one agent step). It takes a function by reference, so it must not become a door for
code sent by value: only lumos_ray's own module-level coroutine functions run."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lumos_ray.actors._agent_actor import AgentActor
from lumos_ray.workflows._runner import hosted_cancel, hosted_execute


async def _outsider(actor: Any) -> str:
    return "ran"


def _closure() -> Any:
    async def inner(actor: Any) -> str:
        return "ran"

    return inner


@pytest.mark.parametrize(
    "fn",
    [_outsider, _closure(), lambda actor: asyncio.sleep(0), print],
    ids=["function-outside-lumos_ray", "closure", "lambda", "builtin"],
)
def test_hosted_refuses_anything_but_lumos_module_functions(fn: Any) -> None:
    with pytest.raises(TypeError, match="only lumos_ray's own"):
        asyncio.run(AgentActor.hosted(object(), fn))  # type: ignore[arg-type]


def test_hosted_refuses_a_lumos_function_rebuilt_under_its_name() -> None:
    """A function carrying a lumos module and name but not the module's object (what
    a by-value pickle of caller code would rebuild) is refused."""

    async def fake(actor: Any) -> str:
        return "ran"

    fake.__module__ = hosted_execute.__module__
    fake.__qualname__ = fake.__name__ = "hosted_execute"
    with pytest.raises(TypeError):
        asyncio.run(AgentActor.hosted(object(), fake))  # type: ignore[arg-type]


def test_hosted_runs_the_workflows_layers_own_functions() -> None:
    from lumos_ray.actors._agent_actor import _own_function

    assert _own_function(hosted_execute) and _own_function(hosted_cancel)
