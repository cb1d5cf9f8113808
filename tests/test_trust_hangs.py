"""Hangs and endless re-runs (issue 12, items 1-4): far-future and non-finite delays, a timer
thread that must outlive any error, ``BaseException``s from workflow code, runs that cannot
record their outcome, ``Retry`` fields that would spin, and workflows that wait on themselves.

Each test finishes in well under a second when the engine is right; the ``HANG`` timeouts only
turn a regression (a hang) into a failure instead of a stuck run.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import pytest
from support import eventually, stored_status

import litedurable as ld
from litedurable._clock import SystemClock
from litedurable.testing import FakeClock

pytestmark = pytest.mark.both_backends  # each test runs on SQLite and on PostgreSQL

HANG = 30.0  # seconds: a guard against hangs, never a performance expectation


# -- item 1: far-future deadlines and the timer thread -------------------------------------


def test_far_future_deadlines_leave_the_timer_thread_working(db_path):
    """Issue 12 item 1: a 1e12 s sleep, deadline or select timeout used to raise
    ``OverflowError`` in the timer thread, and no timer of the App fired again."""
    app = ld.App(db_path, suspend_after=0.0)

    @app.workflow()
    def sleeps_forever() -> None:
        ld.sleep(1e12)

    @app.workflow()
    def selects_forever() -> str:
        ld.select([ld.after(1e12)], timeout=1e12)
        return "late"

    @app.workflow()
    def naps() -> str:
        ld.sleep(0.05)
        return "woke"

    with app:
        far = app.start(sleeps_forever)
        app.start(selects_forever)
        app.start(naps, timeout=1e12)
        eventually(lambda: len(app.steps(far.workflow_id)) == 1, "the far sleep's row",
                   timeout=HANG)
        # Every far timer is armed by now; a short one must still fire.
        assert app.run(naps) == "woke"
        assert app.start(naps, timeout=1e12).result(timeout=HANG) == "woke"
        assert far.status() is ld.Status.PENDING


@pytest.mark.parametrize("bad", [math.inf, math.nan, -1.0], ids=["inf", "nan", "negative"])
def test_non_finite_delays_are_value_errors_everywhere(db_path, bad):
    """Issue 12 item 1: ``inf``/NaN delays are refused with a ``ValueError`` that names the
    call, in every place a delay is taken (inside a workflow, the workflow fails with it)."""
    app = ld.App(db_path)

    @app.workflow()
    def sleeps(how: str) -> None:
        if how == "sleep":
            ld.sleep(bad)
        elif how == "after":
            ld.after(bad)
        else:
            ld.select([ld.after(1)], timeout=bad)

    with app:
        for how, call in (("sleep", "ld.sleep"), ("after", "ld.after"), ("select", "select")):
            with pytest.raises(ValueError, match=call):
                app.start(sleeps, how).result(timeout=HANG)
        with pytest.raises(ValueError, match="timeout"):
            app.start(sleeps, "sleep", timeout=bad)
        done = app.start(sleeps, "never mind")
        with pytest.raises(ValueError, match="timeout"):
            done.result(timeout=bad)
    with pytest.raises(ValueError, match="timeout"):
        app.workflow(timeout=bad)


@pytest.mark.parametrize("setting", ["grace", "busy_timeout", "lease", "suspend_after"])
@pytest.mark.parametrize("bad", [math.inf, math.nan, -1.0, 1e12], ids=["inf", "nan", "neg", "huge"])
def test_app_duration_settings_are_checked(db_path, setting, bad):
    """Issue 12 item 1 (sibling): each App duration becomes a thread's wait; a NaN, infinite
    or huge one stopped the heartbeat or close() with an ``OverflowError`` far from its cause."""
    with pytest.raises(ValueError, match=rf"App\({setting}="):
        ld.App(db_path, **{setting: bad})


@pytest.mark.parametrize("setting", ["workers", "workflow_threads", "max_recovery_attempts",
                                     "max_payload_bytes"])
@pytest.mark.parametrize("bad", [0, math.nan, 2.5, True], ids=["zero", "nan", "float", "bool"])
def test_app_count_settings_are_checked(db_path, setting, bad):
    """Issue 12 item 1 (sibling): ``max_payload_bytes=nan`` disabled the size limit."""
    with pytest.raises(ValueError, match=setting):
        ld.App(db_path, **{setting: bad})


def test_fake_clock_refuses_non_finite_time():
    """Issue 12 item 1 (sibling): a NaN FakeClock time made every deadline check false."""
    clock = FakeClock()
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="finite"):
            clock.advance(bad)
        with pytest.raises(ValueError, match="finite"):
            clock.set(bad)


class _FlakyClock(SystemClock):
    """A real clock whose ``wait`` raises the first time one engine thread calls it."""

    def __init__(self, thread: str) -> None:
        self.thread = thread
        self.failed = threading.Event()

    def wait(self, cond: threading.Condition, deadline: float | None,
             timeout: float | None = None) -> None:
        if threading.current_thread().name == self.thread and not self.failed.is_set():
            self.failed.set()
            raise RuntimeError("a clock that fails once")
        super().wait(cond, deadline, timeout)


def test_timer_thread_survives_an_error(db_path, caplog):
    """Issue 12 item 1: the timer thread must survive any exception raised inside it."""
    clock = _FlakyClock("litedurable-timer")
    app = ld.App(db_path, clock=clock, suspend_after=0.0)

    @app.workflow()
    def naps() -> str:
        ld.sleep(0.05)
        return "woke"

    with app:
        assert clock.failed.wait(HANG)
        assert app.start(naps).result(timeout=HANG) == "woke"
    assert "timer thread hit an error" in caplog.text


class _TwoArgumentClock:
    """A user's clock written to the ``Clock`` protocol before ``wait`` took ``timeout=``."""

    def __init__(self) -> None:
        self.waits = 0

    def now(self) -> float:
        return time.time()

    def wait(self, cond: threading.Condition, deadline: float | None) -> None:
        self.waits += 1
        cond.wait(None if deadline is None else min(max(0.0, deadline - time.time()), 3600.0))


def test_a_clock_with_the_two_argument_wait_still_runs_workflows(db_path):
    """A custom clock with the old ``wait(cond, deadline)`` made every workflow that waited
    fail for good with a ``TypeError`` from inside the engine (its run's wait passes a real-time
    cap as a third argument). The protocol's older form must keep working."""
    clock = _TwoArgumentClock()
    app = ld.App(db_path, clock=clock, suspend_after=HANG)

    @app.step()
    def slow() -> int:
        time.sleep(0.1)
        return 1

    @app.workflow()
    def waits() -> int:
        future = ld.go(slow)  # the run waits for it (a wait with a real-time cap)
        ld.sleep(0.05)
        return future.result() + 1

    with app:
        handle = app.start(waits)
        assert handle.result(timeout=HANG) == 2
        assert handle.status() == ld.Status.SUCCEEDED
    assert clock.waits > 0


def test_scheduler_thread_survives_an_error(db_path, caplog):
    """Issue 12 item 1 (sibling): the scheduler thread died on an error from the clock."""
    clock = _FlakyClock("litedurable-scheduler")
    app = ld.App(db_path, clock=clock)

    @app.workflow(schedule="* * * * * *")
    def tick(fire_at: object) -> None:
        pass

    with app:
        assert clock.failed.wait(HANG)
        eventually(lambda: app.list_workflows(), "a firing after the error", timeout=HANG)
    assert "scheduler could not read or fire" in caplog.text


# -- item 2: BaseException from workflow code, and runs that cannot record ----------------


def test_system_exit_in_an_inline_step_fails_the_workflow_once(db_path):
    """Issue 12 item 2: ``SystemExit`` from an inline step left the workflow pending and
    re-ran it at every lease, without bound."""
    app = ld.App(db_path, lease=0.3)
    runs: list[int] = []

    @app.step()
    def quits() -> None:
        runs.append(1)
        raise SystemExit(3)

    @app.workflow()
    def wf() -> None:
        quits()

    with app:
        handle = app.start(wf)
        with pytest.raises(SystemExit):
            handle.result(timeout=HANG)
        assert handle.status() is ld.Status.FAILED
        assert [s.error for s in app.steps(handle.workflow_id)] == ["SystemExit: 3"]
        assert app.recover() == []
    assert runs == [1]


def test_keyboard_interrupt_in_a_go_step_fails_the_workflow_once(db_path):
    """Issue 12 item 2: ``KeyboardInterrupt`` in a ``go`` body broke its future for good."""
    app = ld.App(db_path, lease=0.3)
    runs: list[int] = []

    def interrupted() -> None:
        runs.append(1)
        raise KeyboardInterrupt

    @app.workflow()
    def wf() -> str:
        future = ld.go(interrupted)
        try:
            future.result()
        except KeyboardInterrupt:
            return "caught"
        return "not raised"

    with app:
        handle = app.start(wf)
        assert handle.result(timeout=HANG) == "caught"
        assert app.steps(handle.workflow_id)[0].error == "KeyboardInterrupt: "
    assert runs == [1]


class _Died(BaseException):
    """What a test's crash hook raises to stop the engine where it stands."""


def test_a_crash_hook_unwinding_the_workflow_is_not_its_outcome(db_path):
    """Issue 12 item 2 (the other side): with ``BaseException``s from workflow code now being
    recorded outcomes, one raised by a test's crash hook must still leave nothing recorded,
    as a real crash would, so the next App resumes the workflow."""
    app = ld.App(db_path)
    runs: list[int] = []

    @app.step()
    def work() -> int:
        runs.append(1)
        return 7

    @app.workflow()
    def wf() -> int:
        return work()

    def die(point: str, info: object) -> None:
        if point == "after_commit":
            raise _Died

    app.faults.callback = die
    with app:
        handle = app.start(wf, workflow_id="crashy")
        eventually(lambda: app.faults.crashed is not None, "the hook to fire", timeout=HANG)
        assert handle.status() is ld.Status.PENDING
    app.faults.callback = None
    with app:
        assert app.handle("crashy").result(timeout=HANG) == 7
    assert runs == [1]


def test_a_run_that_cannot_record_counts_as_a_recovery_attempt(db_path, monkeypatch):
    """Issue 12 item 2: a run that stops without recording (here every step write fails) was
    re-driven by its own App at every lease, running the step body again each time, and was
    never counted against ``max_recovery_attempts``. Now it ends ``exhausted``."""
    app = ld.App(db_path, lease=0.2, max_recovery_attempts=2)
    runs: list[int] = []

    @app.step()
    def work() -> int:
        runs.append(1)
        return 1

    @app.workflow()
    def wf() -> int:
        return work()

    with app:
        journal = app._storage

        def locked(*args: object, **kwargs: object) -> None:
            raise ld.JournalLockedError("simulated: the write lock stayed taken")

        monkeypatch.setattr(journal, "record_step", locked)
        handle = app.start(wf)
        eventually(lambda: handle.status() is not ld.Status.PENDING, "the workflow to give up",
                   timeout=HANG)
        assert handle.status() is ld.Status.EXHAUSTED
        with pytest.raises(ld.WorkflowExhaustedError):
            handle.result(timeout=HANG)
    # The first run, then one per counted recovery up to the limit.
    assert len(runs) == 3


# -- item 3: Retry fields --------------------------------------------------------------------


@pytest.mark.parametrize(
    "field", ["initial", "backoff", "max_interval"]
)
@pytest.mark.parametrize("bad", [math.nan, math.inf, "1", True, 10**400],
                         ids=["nan", "inf", "str", "bool", "bigint"])
def test_retry_refuses_non_finite_fields(field, bad):
    """Issue 12 item 3: ``Retry(initial=nan)`` / ``Retry(backoff=nan)`` were accepted and a
    failing step then retried in a busy loop forever."""
    with pytest.raises(ValueError, match=f"Retry.{field}"):
        ld.Retry(**{field: bad})


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_retry_refuses_bad_attempt_counts(bad):
    with pytest.raises(ValueError, match="max_attempts"):
        ld.Retry(max_attempts=bad)


def test_retry_delay_never_overflows(db_path):
    """Issue 12 item 3 (sibling): ``backoff ** attempt`` past the float range raised
    ``OverflowError`` out of the retry loop after ~300 attempts of a fast-failing step."""
    app = ld.App(db_path)
    attempts: list[int] = []

    @app.step(retries=ld.Retry(max_attempts=400, initial=0.0, backoff=10.0, max_interval=0.0))
    def flaky() -> int:
        attempts.append(1)
        if len(attempts) < 400:
            raise ConnectionError("not yet")
        return len(attempts)

    @app.workflow()
    def wf() -> int:
        return flaky()

    assert ld.Retry(initial=0.1, backoff=10.0, max_interval=7.0).delay(10_000) == 7.0
    with app:
        assert app.start(wf).result(timeout=HANG) == 400


# -- item 4: waiting on yourself ----------------------------------------------------------


def test_a_workflow_waiting_on_its_own_handle_is_a_usage_error(db_path):
    """Issue 12 item 4: ``app.handle(ld.workflow_id()).result()`` inside the workflow hung."""
    app = ld.App(db_path)

    @app.workflow()
    def selfish() -> None:
        app.handle(ld.workflow_id()).result()

    with app, pytest.raises(ld.UsageError, match="its own result"):
        app.start(selfish).result(timeout=HANG)


def test_a_child_with_its_own_or_its_parents_id_is_a_usage_error(db_path):
    """Issue 12 item 4: starting a child under the workflow's own id (or its parent's) gave a
    handle to itself, and waiting on it hung."""
    app = ld.App(db_path)

    @app.workflow()
    def child_of(target: str) -> str:
        wid = ld.workflow_id() if target == "self" else target
        return str(app.start(child_of, "self", workflow_id=wid).result())

    @app.workflow()
    def parent() -> str:
        return str(app.start(child_of, ld.workflow_id()).result())

    with app:
        with pytest.raises(ld.UsageError, match="its own id"):
            app.start(child_of, "self", workflow_id="loop").result(timeout=HANG)
        with pytest.raises(ld.UsageError, match="its parent's id"):
            app.start(parent, workflow_id="top").result(timeout=HANG)


def test_a_step_waiting_on_its_own_workflow_is_a_usage_error(db_path):
    """Issue 12 item 4 (sibling): a step blocking on its own workflow's result deadlocked."""
    app = ld.App(db_path)

    @app.step()
    def peek() -> None:
        app.handle(ld.workflow_id()).result()

    @app.workflow()
    def wf() -> None:
        peek()

    with app, pytest.raises(ld.UsageError, match="own workflow"):
        app.start(wf).result(timeout=HANG)


def test_offline_replay_reproduces_a_recorded_base_exception(db_path):
    """Issue 12 item 2 (sibling, found by the attack review): ``litedurable replay`` caught only
    ``Exception``, so a workflow that failed with ``SystemExit``/``KeyboardInterrupt`` (now a
    recorded outcome) made the CLI exit with that code, or print a raw traceback."""
    from litedurable._app import replay_check
    from litedurable._backends import open_storage

    app = ld.App(db_path)

    @app.step()
    def quits() -> None:
        raise SystemExit(4)

    @app.workflow()
    def interrupted() -> None:
        raise KeyboardInterrupt("from workflow code")

    @app.workflow()
    def step_quits() -> None:
        quits()

    with app:
        for wf in (interrupted, step_quits):
            with pytest.raises(BaseException):  # noqa: B017 - SystemExit / KeyboardInterrupt
                app.start(wf, workflow_id=wf.__name__).result(timeout=HANG)
    with open_storage(db_path, readonly=True) as journal:
        for wid in ("interrupted", "step_quits"):
            row = journal.get_workflow(wid)
            assert row is not None and row.status == "failed"
            assert replay_check(app, journal, row) is None


def test_close_does_not_wait_out_an_inline_retry_delay(db_path):
    """Found by the attack review: an inline step waiting out a long retry delay was not told
    the App was closing, so ``close()`` always used its whole grace period and then blamed a
    step body that was not running."""
    app = ld.App(db_path, grace=HANG)
    attempts = threading.Event()

    @app.step(retries=ld.Retry(max_attempts=2, initial=1e5, max_interval=1e5))
    def flaky() -> None:
        attempts.set()
        raise ConnectionError("try again much later")

    @app.workflow()
    def wf() -> None:
        flaky()

    app.launch()
    try:
        app.start(wf)
        assert attempts.wait(HANG)
    finally:
        started = time.monotonic()
        app.close()
    assert time.monotonic() - started < HANG / 2  # a hang guard: grace is HANG


@pytest.mark.parametrize("where", ["inline retry delay", "go retry delay", "step using its app"])
def test_a_close_interrupting_a_step_leaves_its_workflow_pending(db_path, where):
    """``close()`` ends a step's retry delay with ``AppClosedError`` (and a step body that
    uses its App gets the same from the closed App). For an inline step that error went into
    the workflow's code, which raised it, and the workflow was recorded ``failed`` for good;
    a body's own ``AppClosedError`` was recorded as the step's outcome. A close must leave
    the workflow pending, and the step unrecorded, to run again at the next launch."""
    attempts: list[int] = []

    def make() -> tuple[ld.App, Any, Any]:
        app = ld.App(db_path, grace=HANG)

        @app.workflow(name="other")
        def other() -> int:
            return 5

        @app.step(name="flaky", retries=ld.Retry(max_attempts=2, initial=1e5, max_interval=1e5))
        def flaky() -> int:
            attempts.append(1)
            if len(attempts) == 1:
                raise ConnectionError("try again much later")
            return 7

        @app.step(name="peek")
        def peek() -> int:
            attempts.append(1)
            if len(attempts) == 1:  # the first run returns once close() has begun
                eventually(lambda: app._runtime is None, "close() to begin", timeout=HANG)
            return app.handle("other").result() + 2

        @app.workflow(name="wf")
        def wf() -> int:
            if where == "inline retry delay":
                return flaky()
            if where == "go retry delay":
                return ld.go(flaky).result()
            return peek()

        return app, wf, other

    app, wf, other = make()
    with app:
        app.run(other, workflow_id="other")
        app.start(wf, workflow_id="w")
        eventually(lambda: attempts, "the step's first attempt", timeout=HANG)
    assert stored_status(db_path, "w") == "pending"

    app, wf, other = make()
    with app:
        assert app.handle("w").result(timeout=HANG) == 7
    assert len(attempts) == 2


def test_a_name_with_a_lone_surrogate_is_refused_at_decoration(db_path):
    """Found by the attack review: ``@app.workflow(name="n\\ud800")`` was accepted and every
    start then failed with a raw ``UnicodeEncodeError``."""
    app = ld.App(db_path)
    with pytest.raises(ld.UsageError, match="surrogate"):
        app.workflow(name="n\ud800")(lambda: None)
    with pytest.raises(ld.UsageError, match="surrogate"):
        app.step(name="s\ud800")(lambda: None)
