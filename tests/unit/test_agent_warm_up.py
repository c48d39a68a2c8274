"""A dedicated agent actor opens its store in the background as it starts (issue 17: its
readiness does not wait for the store's imports, its first turn mostly finds it open);
a store that cannot be opened is reported by the first turn, as without the warm-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from lumos_ray import Agent
from lumos_ray.actors._agent_actor import AgentActor
from lumos_ray.store import StoreError
from lumos_ray.testing import FunctionModel


def _answer(messages: list[dict], tools: list[dict]) -> str:
    return f"turn {sum(1 for m in messages if m['role'] == 'user')}"


def _spec() -> Agent:
    return Agent(name="warm", model=FunctionModel(_answer))


async def test_warm_up_opens_the_store_before_any_turn_and_turns_use_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LUMOS_HOME", str(tmp_path))
    monkeypatch.setenv("LUMOS_STORE_URL", f"sqlite:///{tmp_path / 'warm.db'}")
    actor = AgentActor(_spec(), replica=1, tenant="t1", warm_up=True)
    assert actor._warming is not None
    actor._warming.join(timeout=60)
    assert not actor._warming.is_alive()
    assert (tmp_path / "warm.db").is_file()  # opened (and created) by the warm-up alone
    assert actor._store is None  # process-wide: the actor's own state is untouched
    assert (await actor.run("hi", "thread-1")).output == "turn 1"
    assert (await actor.run("again", "thread-1")).output == "turn 2"
    # A new actor process (a restart) reads the thread back from that store.
    again = AgentActor(_spec(), replica=1, tenant="t1")
    assert [m["content"] for m in await again.history("thread-1")][-1] == "turn 2"


async def test_a_store_that_cannot_open_fails_the_first_turn_with_a_store_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LUMOS_HOME", str(tmp_path))
    monkeypatch.setenv("LUMOS_STORE_URL", f"sqlite:///{blocker / 'runs.db'}")
    actor = AgentActor(_spec(), replica=1, tenant="t1", warm_up=True)
    assert actor._warming is not None
    actor._warming.join(timeout=60)
    with pytest.raises(StoreError):
        await actor.run("hi", "thread-1")


def test_without_warm_up_no_thread_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUMOS_HOME", str(tmp_path))
    monkeypatch.setenv("LUMOS_STORE_URL", f"sqlite:///{tmp_path / 'cold.db'}")
    actor = AgentActor(_spec(), replica=1, tenant="t1")
    assert actor._warming is None
    assert not (tmp_path / "cold.db").exists()
