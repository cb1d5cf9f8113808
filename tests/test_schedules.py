"""Cron schedules: fire times (seconds, time zones, DST), exactly-once firing across Apps,
catch-up, pause/resume/remove, persistence, and bad expressions refused at registration.

Time is a ``FakeClock``; a firing is observed as the workflow row it creates.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from support import eventually

import litedurable as ld
from litedurable._cron import Cron
from litedurable.testing import FakeClock

pytestmark = pytest.mark.both_backends  # each test runs on SQLite and on PostgreSQL

START = datetime(2026, 1, 1, tzinfo=UTC)
EVERY_15_S = "*/15 * * * * *"


def firings(app: ld.App, name: str = "tick") -> list[str]:
    return sorted(w.workflow_id for w in app.list_workflows() if w.workflow_id.startswith(name))


def wait_for_firings(app: ld.App, count: int, name: str = "tick") -> list[str]:
    """Wait until ``count`` firings exist and have finished (a hang guard, not a timing claim)."""

    def finished() -> bool:
        done = [w for w in app.list_workflows() if w.workflow_id.startswith(name)
                and w.status is ld.Status.SUCCEEDED]
        return len(done) >= count

    eventually(finished, lambda: f"{count} firings; only {firings(app, name)} fired")
    return firings(app, name)


def build(path: str, clock: FakeClock, seen: Counter[str] | None = None) -> tuple[ld.App, object]:
    app = ld.App(path, clock=clock, app_version="v1")
    lock = threading.Lock()

    @app.step(name="note")
    def note(fired: str) -> None:
        if seen is not None:
            with lock:
                seen[fired] += 1

    @app.workflow(name="job")
    def job(fire_at: datetime) -> str:
        assert fire_at.tzinfo is not None
        note(fire_at.isoformat())
        return fire_at.isoformat()

    return app, job


# -- fire times -----------------------------------------------------------------------------


def test_fire_times_with_seconds_and_five_fields():
    every_15 = Cron(EVERY_15_S)
    first = every_15.after(START.timestamp())
    assert first == START + timedelta(seconds=15)
    assert every_15.after(first.timestamp()) == START + timedelta(seconds=30)
    hourly = Cron("0 * * * *")
    assert hourly.after(START.timestamp() + 1) == START + timedelta(hours=1)
    fires, more = every_15.between(START.timestamp(), START.timestamp() + 60, limit=10)
    assert [f.second for f in fires] == [15, 30, 45, 0] and not more
    fires, more = every_15.between(START.timestamp(), START.timestamp() + 3600, limit=3)
    assert [f.isoformat() for f in fires] == [
        "2026-01-01T00:59:30+00:00", "2026-01-01T00:59:45+00:00", "2026-01-01T01:00:00+00:00",
    ]
    assert more


def test_daylight_saving_changes_in_a_time_zone():
    berlin = ZoneInfo("Europe/Berlin")

    def fires(cron: Cron, start: datetime, n: int) -> list[str]:
        out, at = [], start.timestamp()
        for _ in range(n):
            fire = cron.after(at)
            out.append(fire.isoformat())
            at = fire.timestamp()
        return out

    daily = Cron("0 30 2 * * *", tz="Europe/Berlin")  # 02:30:00 every day
    # Spring forward (29 March 2026, 02:00 -> 03:00): 02:30 does not exist; it fires at 03:00.
    assert fires(daily, datetime(2026, 3, 28, 12, tzinfo=berlin), 2) == [
        "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00",
    ]
    # Fall back (25 October 2026, 03:00 -> 02:00): 02:30 happens twice; a daily job runs once.
    assert fires(daily, datetime(2026, 10, 24, 12, tzinfo=berlin), 2) == [
        "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00",
    ]
    # An interval schedule keeps its interval in real time through the repeated hour.
    half_hourly = Cron("0 */30 * * * *", tz="Europe/Berlin")
    assert fires(half_hourly, datetime(2026, 10, 25, 1, 45, tzinfo=berlin), 5) == [
        "2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00", "2026-10-25T02:30:00+01:00", "2026-10-25T03:00:00+01:00",
    ]


def test_a_schedule_fires_on_the_fake_clock_with_its_fire_time(db_path):
    clock, seen = FakeClock(START), Counter[str]()
    app, job = build(db_path, clock, seen)
    app.schedule("tick", job, EVERY_15_S)
    with app:
        clock.advance(15)
        assert wait_for_firings(app, 1) == ["tick@2026-01-01T00:00:15+00:00"]
        clock.advance(15)
        wait_for_firings(app, 2)
        result = app.handle("tick@2026-01-01T00:00:30+00:00").result(timeout=30)
        [info] = app.list_schedules()
    assert result == "2026-01-01T00:00:30+00:00"
    assert seen == {"2026-01-01T00:00:15+00:00": 1, "2026-01-01T00:00:30+00:00": 1}
    assert (info.name, info.workflow, info.cron, info.tz, info.paused) == (
        "tick", "job", EVERY_15_S, None, False)
    assert info.last_fire == START + timedelta(seconds=30)
    assert info.next_fire == START + timedelta(seconds=45)


def test_a_schedule_in_a_time_zone_fires_with_a_local_aware_time(db_path):
    clock = FakeClock(datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC))  # 02:59:59 local, after DST
    app, job = build(db_path, clock)
    app.schedule("paris", job, "0 0 3 * * *", tz="Europe/Paris")
    with app:
        clock.advance(1)
        assert wait_for_firings(app, 1, "paris") == ["paris@2026-03-29T03:00:00+02:00"]
        value = app.handle("paris@2026-03-29T03:00:00+02:00").result(timeout=30)
    assert value == "2026-03-29T03:00:00+02:00"


def test_the_decorator_registers_a_schedule_named_after_the_workflow(db_path):
    clock = FakeClock(START)
    app = ld.App(db_path, clock=clock)

    @app.workflow(name="nightly", schedule="0 0 * * *")
    def nightly(fire_at: datetime) -> None: ...

    with app:
        [info] = app.list_schedules()
        assert (info.name, info.workflow, info.next_fire) == ("nightly", "nightly",
                                                              START + timedelta(days=1))
        clock.advance(86400)
        assert wait_for_firings(app, 1, "nightly") == ["nightly@2026-01-02T00:00:00+00:00"]


# -- exactly once, catch-up, persistence ----------------------------------------------------


def test_two_apps_on_one_file_start_each_firing_once(db_path):
    clock, seen = FakeClock(START), Counter[str]()
    first, job_a = build(db_path, clock, seen)
    second, job_b = build(db_path, clock, seen)
    first.schedule("tick", job_a, EVERY_15_S)
    second.schedule("tick", job_b, EVERY_15_S)
    with first, second:
        for n in range(1, 9):
            clock.advance(15)
            wait_for_firings(first, n)
        ids = firings(first)
    assert len(ids) == 8 and len(set(ids)) == 8
    assert sorted(seen.values()) == [1] * 8  # each firing's step ran exactly once


def test_missed_firings_are_skipped_by_default(db_path):
    clock = FakeClock(START)
    app, job = build(db_path, clock)
    app.schedule("tick", job, EVERY_15_S)
    with app:
        clock.advance(15)
        wait_for_firings(app, 1)
    clock.advance(60)  # 00:01:15: four firings (00:30 .. 01:15) pass while nothing runs
    app, job = build(db_path, clock)
    app.schedule("tick", job, EVERY_15_S)
    with app:
        clock.advance(15)
        assert wait_for_firings(app, 2) == [
            "tick@2026-01-01T00:00:15+00:00", "tick@2026-01-01T00:01:30+00:00",
        ]


def test_missed_firings_are_caught_up_on_request_within_a_bound(db_path):
    clock = FakeClock(START)
    app, job = build(db_path, clock)
    app.schedule("tick", job, EVERY_15_S, catch_up=True)
    with app:
        clock.advance(15)
        wait_for_firings(app, 1)
    clock.advance(60)
    app, job = build(db_path, clock)
    app.schedule("tick", job, EVERY_15_S, catch_up=True)
    with app:
        ids = wait_for_firings(app, 5)
    assert [i.split("T")[1][:8] for i in ids] == [
        "00:00:15", "00:00:30", "00:00:45", "00:01:00", "00:01:15",
    ]
    clock.advance(86400)  # a day of 15 s firings missed: only the latest CATCH_UP_LIMIT start
    app, job = build(db_path, clock)
    app.schedule("tick", job, EVERY_15_S, catch_up=True)
    with app:
        ids = wait_for_firings(app, 5 + ld.CATCH_UP_LIMIT)
    assert len(ids) == 5 + ld.CATCH_UP_LIMIT
    assert ids[-1] == "tick@2026-01-02T00:01:15+00:00"


def test_schedules_survive_restarts_and_pause_resume_remove(db_path):
    clock = FakeClock(START)
    app, job = build(db_path, clock)
    app.schedule("tick", job, EVERY_15_S)
    with app:
        app.pause_schedule("tick")
        clock.advance(30)
    # Another process: registers the workflow but declares no schedule; the journal has it.
    app, _ = build(db_path, clock)
    with app:
        [info] = app.list_schedules()
        assert info.paused and info.next_fire is None
        clock.advance(30)
        time.sleep(0.05)  # give a (wrongly) running scheduler the chance to fire
        assert firings(app) == []
        app.resume_schedule("tick")  # from now on: the paused stretch is not made up
        clock.advance(15)
        assert wait_for_firings(app, 1) == ["tick@2026-01-01T00:01:15+00:00"]
        app.remove_schedule("tick")
        assert app.list_schedules() == []
        clock.advance(60)
        time.sleep(0.05)
        assert len(firings(app)) == 1
        for call in (app.pause_schedule, app.resume_schedule, app.remove_schedule):
            with pytest.raises(ld.ScheduleNotFoundError, match="tick") as info_error:
                call("tick")
            assert isinstance(info_error.value, LookupError)


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("* * * *", "4 fields"),
        ("* * * * * * *", "7 fields"),
        ("61 * * * *", "not valid"),
        ("*/15 * * * * banana", "not valid"),
    ],
)
def test_a_bad_cron_expression_fails_at_registration(db_path, cron, message):
    app = ld.App(db_path)

    @app.workflow(name="job")
    def job(fire_at: datetime) -> None: ...

    with pytest.raises(ValueError, match=message):
        app.schedule("bad", job, cron)
    with pytest.raises(ValueError, match=message):

        @app.workflow(name="decorated", schedule=cron)
        def decorated(fire_at: datetime) -> None: ...


def test_bad_time_zone_name_and_signature_fail_at_registration(db_path):
    app = ld.App(db_path)

    @app.workflow(name="job")
    def job(fire_at: datetime) -> None: ...

    @app.workflow(name="two_args")
    def two_args(fire_at: datetime, region: str) -> None: ...

    with pytest.raises(ValueError, match="Mars/Olympus"):
        app.schedule("tick", job, EVERY_15_S, tz="Mars/Olympus")
    with pytest.raises(ld.UsageError, match="fire time"):
        app.schedule("tick", two_args, EVERY_15_S)
    with pytest.raises(ld.UsageError, match="schedule name"):
        app.schedule("", job, EVERY_15_S)
    with pytest.raises(ld.InvalidIdError):
        app.schedule("x" * 600, job, EVERY_15_S)
    with pytest.raises(ld.UsageError, match="not a workflow"):
        app.schedule("tick", print, EVERY_15_S)
