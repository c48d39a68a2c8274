"""Time travel and schedules on a real runner: replay from a step re-runs only what
follows it (an effect log counts executions), a fork with edited state diverges while
the original stays as it was, and an every-second schedule fires once per tick across a
runner restart."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from lumos_ray import (
    FunctionStep,
    HumanStep,
    Workflow,
    cancel_schedule,
    create_schedule,
    fork_run,
    get_run,
    list_checkpoints,
    list_runs,
    replay_run,
    start_run,
    wait_run,
)
from lumos_ray.errors import InputValidationError, NotFoundError

pytestmark = pytest.mark.usefixtures("ray_cluster")
H = "tests.integration._wf_helpers"


def _chain(name: str, log: Path) -> Workflow:
    """a -> b -> c -> d; c and d use the state of the step before them."""
    return Workflow(
        name=name,
        steps=[
            FunctionStep(
                id="a", function=f"{H}:effect", args={"log": str(log), "label": "a", "value": 1}
            ),
            FunctionStep(
                id="b", function=f"{H}:effect", args={"log": str(log), "label": "b", "value": 2}
            ),
            FunctionStep(
                id="c",
                function=f"{H}:effect",
                args={"log": str(log), "label": "c", "value": "{{ state.b * 10 }}"},
            ),
            FunctionStep(
                id="d",
                function=f"{H}:effect",
                args={"log": str(log), "label": "d", "value": "{{ state.c + 1 }}"},
            ),
        ],
    )


def _effects(log: Path) -> list[str]:
    return log.read_text().split()


async def test_replay_from_a_step_reruns_only_that_step_and_what_follows(tmp_path):
    log = tmp_path / "effects"
    original = await wait_run(
        await __import__("lumos_ray").start_run(_chain("tt_replay", log)), timeout=120
    )
    assert original.status == "succeeded", original.error
    assert original.output == {"a": 1, "b": 2, "c": 20, "d": 21}
    assert _effects(log) == ["a", "b", "c", "d"]

    cps = await list_checkpoints(original.id)
    assert [c.path for c in cps] == ["0.a", "1.b", "2.c", "3.d"]
    assert [c.index for c in cps] == [0, 1, 2, 3]

    new_id = await replay_run(original.id, "2.c")
    replayed = await wait_run(new_id, timeout=120)
    assert new_id != original.id
    assert replayed.status == "succeeded", replayed.error
    assert replayed.output == original.output
    assert replayed.version == original.version
    assert _effects(log) == ["a", "b", "c", "d", "c", "d"]  # a and b did not run again

    # Index form: keep the first checkpoint only.
    again = await wait_run(await replay_run(original.id, 1), timeout=120)
    assert again.output == original.output
    assert _effects(log)[6:] == ["b", "c", "d"]

    # The original is as it was: same output, same checkpoints.
    assert (await get_run(original.id)).output == original.output
    assert [c.output for c in await list_checkpoints(original.id)] == [1, 2, 20, 21]


async def test_a_fork_with_edited_state_diverges_and_the_original_is_unchanged(tmp_path):
    log = tmp_path / "effects"
    original = await wait_run(await start_run(_chain("tt_fork", log)), timeout=120)
    assert original.output == {"a": 1, "b": 2, "c": 20, "d": 21}

    forked = await wait_run(await fork_run(original.id, "2.c", outputs={"1.b": 5}), timeout=120)
    assert forked.status == "succeeded", forked.error
    assert forked.output == {"a": 1, "b": 5, "c": 50, "d": 51}
    assert _effects(log) == ["a", "b", "c", "d", "c", "d"]
    assert (await get_run(original.id)).output == {"a": 1, "b": 2, "c": 20, "d": 21}
    assert [c.output for c in await list_checkpoints(original.id)] == [1, 2, 20, 21]
    assert [c.output for c in await list_checkpoints(forked.id)] == [1, 5, 50, 51]

    # Bad requests say what to pass instead.
    with pytest.raises(NotFoundError) as err:
        await replay_run(original.id, "9.nope")
    assert "0.a" in err.value.fix
    with pytest.raises(InputValidationError):
        await fork_run(original.id, "1.b", outputs={"2.c": 0})  # c is re-run, not kept
    with pytest.raises(NotFoundError):
        await replay_run("run-does-not-exist", 0)


async def test_an_every_second_schedule_fires_once_per_tick_across_a_runner_restart():
    from lumos_ray.runtime import current_settings, get_actor, kill_actor
    from lumos_ray.workflows._runner import runner_name

    # A tick's run asks for input and suspends: firing is what is measured, not
    # worker start-up (a function step per second queues Ray workers on a busy machine).
    wf = Workflow(
        name="tt_every_second", steps=[HumanStep(id="ok", human={"prompt": "{{ input.who }}"})]
    )
    sid = f"every-second-{int(time.time())}"
    info = await create_schedule(wf, schedule_id=sid, every_s=1, input={"who": "tick"})
    t0 = info.created_at
    assert info.status == "active" and info.next_fire == pytest.approx(t0 + 1, abs=0.5)

    await asyncio.sleep(max(0.0, t0 + 4.2 - time.time()))
    runner = get_actor(runner_name(current_settings().tenant_id))
    assert runner is not None
    assert kill_actor(runner, no_restart=False)  # Ray restarts it; it comes back by itself

    def tick_of(run_id: str) -> float:
        return int(run_id.rsplit(".", 1)[1]) / 1000

    async def fired() -> list[str]:
        return sorted(r.id for r in await list_runs(limit=500) if r.id.startswith(f"{sid}."))

    # Wait until the restarted runner has fired past the 10 s window (missed ticks
    # are fired when it is back), then look at the ticks inside the window.
    deadline = time.time() + 120
    while not any(tick_of(r) > t0 + 10.5 for r in await fired()):
        assert time.time() < deadline, "the schedule stopped firing after the restart"
        await asyncio.sleep(0.5)
    cancelled = await cancel_schedule(sid)
    assert cancelled.status == "cancelled"

    window = [r for r in await fired() if tick_of(r) <= t0 + 10.5]
    assert 9 <= len(window) <= 11, window  # 10 ticks in 10 s, across the restart
    ticks = [round(tick_of(r) * 1000) for r in window]
    assert len(set(ticks)) == len(ticks)  # never twice for one tick
    assert all(b - a == 1000 for a, b in itertools.pairwise(ticks))  # none skipped

    # Each tick's run ran (up to its input step); one that was executing when the
    # runner was killed may be left `running` (an embedded cluster's runner resumes
    # only what it is asked to).
    async def ended(run_id: str) -> str:
        try:
            return (await wait_run(run_id, timeout=60)).status
        except TimeoutError:
            return (await get_run(run_id)).status

    statuses = await asyncio.gather(*(ended(r) for r in window))
    assert statuses.count("suspended") >= len(window) - 1, statuses

    # Nothing fires after the cancel.
    before = await fired()
    await asyncio.sleep(2.5)
    assert await fired() == before
