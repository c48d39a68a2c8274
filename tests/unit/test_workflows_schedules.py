"""Schedules and time travel without Ray: validation, tick arithmetic, the store's
compare-and-set (on SQLite and PostgreSQL), and the fork plan."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lumos_ray.errors import InputValidationError, NotFoundError, RunStateError
from lumos_ray.store import RunStore, ScheduleStore
from lumos_ray.workflows._forks import plan_fork
from lumos_ray.workflows._scheduler import (
    MAX_CATCHUP,
    check_schedule,
    first_tick,
    tick_run_id,
    ticks_due,
)

MakeStore = Callable[..., RunStore]


@pytest.mark.parametrize(
    ("sid", "cron", "every_s", "catchup", "says"),
    [
        ("ok", None, None, "all", "exactly one of"),
        ("ok", "* * * * *", 5, "all", "exactly one of"),
        ("ok", None, 0.5, "all", "at least 1"),
        ("ok", None, float("nan"), "all", "at least 1"),
        ("ok", "not a cron", None, "all", "not valid"),
        ("ok", None, 5, "sometimes", "catchup"),
        ("../x", None, 5, "all", "schedule id"),
        ("", None, 5, "all", "schedule id"),
    ],
)
def test_bad_schedules_are_refused_with_the_fix(sid, cron, every_s, catchup, says) -> None:
    with pytest.raises(InputValidationError) as err:
        check_schedule(sid, cron, every_s, catchup)
    assert says in err.value.message
    assert err.value.fix


def test_period_ticks_catch_up_at_most_the_newest_ones() -> None:
    s = {"next_fire": 100.0, "every_s": 1.0, "cron": None}
    assert ticks_due(s, 99.0) == ([], 100.0)
    assert ticks_due(s, 102.5) == ([100.0, 101.0, 102.0], 103.0)
    due, after = ticks_due(s, 100.0 + 1000)
    assert len(due) == MAX_CATCHUP and due[-1] == 1100.0 and after == 1101.0


def test_cron_ticks_with_seconds_and_minutes() -> None:
    every_10s = {"next_fire": first_tick("* * * * * */10", None, 1_000_000_003.0), "every_s": None}
    every_10s["cron"] = "* * * * * */10"
    assert every_10s["next_fire"] == 1_000_000_010.0
    due, after = ticks_due(every_10s, 1_000_000_031.0)
    assert due == [1_000_000_010.0, 1_000_000_020.0, 1_000_000_030.0] and after == 1_000_000_040.0
    hourly = {"next_fire": first_tick("0 * * * *", None, 3600 * 5 + 1), "every_s": None}
    assert hourly["next_fire"] == 3600 * 6


def test_a_tick_has_one_run_id() -> None:
    assert tick_run_id("nightly", 1700000000.0) == tick_run_id("nightly", 1700000000.0004)
    assert tick_run_id("nightly", 1700000000.0) != tick_run_id("nightly", 1700000001.0)


def test_schedule_rows_and_compare_and_set(store_backend: str, make_store: MakeStore) -> None:
    db = ScheduleStore(make_store())
    row = db.create(
        "s1", "wf", "v1", {"n": 1}, cron=None, every_s=1.0, catchup="all", next_fire=10.0
    )
    assert row["status"] == "active" and row["fired"] == 0
    with pytest.raises(RunStateError):
        db.create("s1", "wf", "v1", None, cron=None, every_s=1.0, catchup="all", next_fire=10.0)
    assert db.advance("s1", 10.0, 12.0, 2)
    assert not db.advance("s1", 10.0, 13.0, 3)  # a second firing of the same tick loses
    assert db.get("s1")["next_fire"] == 12.0 and db.get("s1")["fired"] == 2
    assert db.cancel("s1")["status"] == "cancelled"
    assert not db.advance("s1", 12.0, 13.0, 1)  # a cancelled schedule never moves on
    assert [r["id"] for r in db.list("cancelled")] == ["s1"] and db.list("active") == []
    with pytest.raises(NotFoundError):
        db.get("nope")
    # Another tenant sees none of it.
    other = ScheduleStore(make_store().for_tenant("someone-else"))
    assert other.list() == []
    with pytest.raises(NotFoundError):
        other.cancel("s1")


CPS = [
    {"index": i, "path": p, "output": o, "seq": i + 1}
    for i, (p, o) in enumerate([("0.a", 1), ("1.b", 2), ("2.c", 20), ("3.d", 21)])
]


def test_fork_plan_keeps_what_finished_before_the_step() -> None:
    assert plan_fork(CPS, "2.c", None) == {"0.a": 1, "1.b": 2}
    assert plan_fork(CPS, 0, None) == {}
    assert plan_fork(CPS, 4, None) == {"0.a": 1, "1.b": 2, "2.c": 20, "3.d": 21}
    assert plan_fork(CPS, "2.c", {"1.b": 5}) == {"0.a": 1, "1.b": 5}


@pytest.mark.parametrize(
    ("from_step", "outputs", "error"),
    [
        ("9.z", None, NotFoundError),
        (5, None, NotFoundError),
        (-1, None, NotFoundError),
        (True, None, InputValidationError),
        ("1.b", {"2.c": 0}, InputValidationError),
    ],
)
def test_fork_plan_refuses_what_it_cannot_do(from_step, outputs, error) -> None:
    with pytest.raises(error) as err:
        plan_fork(CPS, from_step, outputs)
    assert err.value.fix


def test_cli_refuses_bad_edits_and_schedules_before_connecting(capsys) -> None:
    from lumos_ray.cli import main

    for argv, says in [
        (["runs", "fork", "r1", "--from", "1", "--set", "no-equals"], "PATH=JSON"),
        (["runs", "fork", "r1", "--from", "1", "--set", "0.a={bad"], "not valid JSON"),
    ]:
        with pytest.raises(SystemExit) as code:
            main(argv)
        assert code.value.code != 0
        out = capsys.readouterr()
        assert says in out.out + out.err
