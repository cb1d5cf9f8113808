"""Durable concurrency: go, select, as_completed, wait_all, after, sleep, cancellation.

Orders are forced with ``threading.Event`` gates inside step bodies (never with sleeps), time is
a ``FakeClock``, and crashes come from ``litedurable.testing.crash_at``. A crash test builds its
App twice from one factory (the second App is "the next process" on the same file) with fresh
gates, so it can make a different branch finish first the second time.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import Counter, defaultdict
from typing import Any

import pytest
from support import engine_thread_names, eventually

import litedurable as ld
from litedurable._clock import SystemClock
from litedurable.testing import FakeClock, crash_at

pytestmark = pytest.mark.both_backends  # each test runs on SQLite and on PostgreSQL

HANG = 20.0  # seconds before a wait that should never take long is declared a hang


# -- helpers ------------------------------------------------------------------------------------


class Gates:
    """Named events a test opens to let step bodies (or workflow code) go on."""

    def __init__(self, *opened: str) -> None:
        self._events: defaultdict[str, threading.Event] = defaultdict(threading.Event)
        self._lock = threading.Lock()
        self.open(*opened)

    def _event(self, name: str) -> threading.Event:
        with self._lock:
            return self._events[name]

    def open(self, *names: str) -> None:
        for name in names:
            self._event(name).set()

    def is_open(self, name: str) -> bool:
        return self._event(name).is_set()

    def wait(self, name: str) -> None:
        if not self._event(name).wait(HANG):
            raise AssertionError(f"gate {name!r} was never opened")


class Calls:
    """A thread-safe log of step-body executions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.log: list[tuple[str, object]] = []

    def add(self, what: str, arg: object = None) -> None:
        with self._lock:
            self.log.append((what, arg))

    def count(self, what: str, arg: object = None) -> int:
        with self._lock:
            return sum(1 for w, a in self.log if w == what and (arg is None or a == arg))


def row(app: ld.App, workflow_id: str, step: int) -> ld.StepInfo | None:
    """The recorded row of ``step`` if it is finished, else None."""
    for info in app.steps(workflow_id):
        if info.step == step and info.finished_at is not None:
            return info
    return None


def wait_row(app: ld.App, workflow_id: str, step: int) -> ld.StepInfo:
    eventually(lambda: row(app, workflow_id, step) is not None, f"step {step} to be recorded",
               timeout=HANG)
    info = row(app, workflow_id, step)
    assert info is not None
    return info


def wait_for_open_select(app: ld.App, workflow_id: str, step: int) -> ld.StepInfo:
    """A select with a timeout writes its row (candidates + deadline) before waiting."""

    def opened() -> ld.StepInfo | None:
        return next((s for s in app.steps(workflow_id) if s.step == step), None)

    eventually(lambda: opened() is not None, f"select at step {step} to open", timeout=HANG)
    info = opened()
    assert info is not None
    return info


def error_type(info: ld.StepInfo) -> str | None:
    """The bare class name of a recorded step error ("litedurable.X: msg" -> "X")."""
    if info.error is None:
        return None
    return info.error.split(":", 1)[0].rsplit(".", 1)[-1]


# -- select: replay keeps the recorded winner ---------------------------------------------------


def make_race_app(
    path: str, gates: Gates, calls: Calls, *, swap: bool = False
) -> tuple[ld.App, Any]:
    """fetch a (step 0) and fetch b (step 1) race in a select (step 2); ``use`` runs after it."""
    app = ld.App(path, grace=2.0)

    @app.step()
    def fetch(name: str) -> str:
        calls.add("fetch", name)
        gates.wait(name)
        return name.upper()

    @app.step()
    def use(winner: str) -> str:
        calls.add("use", winner)
        gates.open("used")
        return f"used {winner}"

    @app.workflow()
    def race() -> list[str]:
        a = ld.go(fetch, "a")
        b = ld.go(fetch, "b")
        gates.wait("select")  # the test decides when the select may run
        first = ld.select([b, a] if swap else [a, b])
        note = use(first.result())
        return [note, *ld.wait_all([a, b])]

    return app, race


@pytest.mark.parametrize("point", ["before_decision", "after_decision"])
def test_select_decision_survives_a_crash_around_its_commit(db_path: str, point: str) -> None:
    # Run 1: b finishes, a stays blocked (unrecorded), the select picks b, then the crash.
    gates, calls = Gates("b", "select"), Calls()
    app, race = make_race_app(db_path, gates, calls)
    switch = crash_at(app, point)
    with app:
        app.start(race, workflow_id="race")
        assert switch.wait(HANG)
        assert switch.info["winner"] == 1
        gates.open("a")  # the old process's a finishes, but its row can no longer be written
    assert calls.count("use") == 0

    # Run 2, "the next process". After a recorded decision, a is made to finish *first*:
    # it is recorded before the select replays, so a live decision would pick a (a tie is
    # won by the lowest step number). Without a recorded decision, a stays blocked.
    gates2, calls2 = Gates(), Calls()
    app2, _ = make_race_app(db_path, gates2, calls2)
    with app2:
        handle = app2.handle("race")
        if point == "after_decision":
            gates2.open("a")
            wait_row(app2, "race", 0)
            gates2.open("select")
            assert handle.result(HANG) == ["used B", "A", "B"]
        else:
            gates2.open("select")
            gates2.wait("used")
            decision = wait_row(app2, "race", 2)
            assert (decision.candidates, decision.winner) == ([0, 1], 1)
            assert row(app2, "race", 0) is None  # the loser is recorded after the decision
            gates2.open("a")
            assert handle.result(HANG) == ["used B", "A", "B"]
        steps = app2.steps("race")

    assert [(s.step, s.kind) for s in steps] == [
        (0, "go"), (1, "go"), (2, "select"), (3, "step")
    ]
    assert (steps[2].candidates, steps[2].winner, steps[2].output) == ([0, 1], 1, 1)
    assert steps[0].output == "A" and steps[1].output == "B"  # the loser kept its own outcome
    assert steps[3].output == "used B"
    assert calls2.count("fetch", "b") == 0  # recorded in run 1: never runs again
    assert calls2.count("fetch", "a") == 1  # unrecorded: runs again (at least once)
    assert calls2.log.count(("use", "B")) == 1 and calls2.count("use") == 1


def test_changed_select_candidates_on_replay_is_nondeterminism(db_path: str) -> None:
    gates = Gates("b", "select")
    app, race = make_race_app(db_path, gates, Calls())
    switch = crash_at(app, "after_decision")
    with app:
        app.start(race, workflow_id="race")
        assert switch.wait(HANG)
        gates.open("a")

    app2, _ = make_race_app(db_path, Gates("a", "b", "select"), Calls(), swap=True)
    with app2:
        handle = app2.handle("race")
        with pytest.raises(ld.NonDeterminismError, match=r"step 2.*\[0, 1\].*\[1, 0\]"):
            handle.result(HANG)
        assert handle.status() == ld.Status.NONDETERMINISTIC


def test_select_live_picks_the_first_to_settle_and_losers_record_later(db_path: str) -> None:
    gates, calls = Gates("a", "select"), Calls()  # a settles, b is held
    app, race = make_race_app(db_path, gates, calls)
    with app:
        handle = app.start(race, workflow_id="race")
        gates.wait("used")
        assert row(app, "race", 1) is None
        gates.open("b")
        assert handle.result(HANG) == ["used A", "A", "B"]
        steps = app.steps("race")
    assert (steps[2].candidates, steps[2].winner) == ([0, 1], 0)
    assert steps[1].output == "B"


# -- as_completed ---------------------------------------------------------------------------------


def make_collect_app(path: str, gates: Gates, calls: Calls) -> tuple[ld.App, Any]:
    app = ld.App(path, grace=2.0)

    @app.step()
    def fetch(name: str) -> str:
        calls.add("fetch", name)
        gates.wait(name)
        return name.upper()

    @app.workflow()
    def collect() -> list[str]:
        futures = [ld.go(fetch, name) for name in ("a", "b", "c")]  # steps 0, 1, 2
        return [f.result() for f in ld.as_completed(futures)]  # decisions at steps 3, 4, 5

    return app, collect


def test_as_completed_replays_the_recorded_order(db_path: str) -> None:
    gates, calls = Gates("c"), Calls()
    app, collect = make_collect_app(db_path, gates, calls)
    switch = crash_at(app, "after_decision", nth=2)
    with app:
        app.start(collect, workflow_id="collect")
        wait_row(app, "collect", 3)  # c was yielded first
        gates.open("a")  # then a; crash right after that second decision
        assert switch.wait(HANG)
        gates.open("b")

    # Everything is fast now: a live run would yield a, b, c (ties -> lowest step number).
    calls2 = Calls()
    app2, _ = make_collect_app(db_path, Gates("a", "b", "c"), calls2)
    with app2:
        assert app2.handle("collect").result(HANG) == ["C", "A", "B"]
        steps = app2.steps("collect")
    decisions = [(s.step, s.kind, s.candidates, s.winner) for s in steps[3:]]
    assert decisions == [
        (3, "as_completed", [0, 1, 2], 2),
        (4, "as_completed", [0, 1], 0),
        (5, "as_completed", [1], 0),
    ]
    assert calls2.log == [("fetch", "b")]


def test_as_completed_live_follows_completion_order(db_path: str) -> None:
    gates = Gates("b")
    app, collect = make_collect_app(db_path, gates, Calls())
    with app:
        handle = app.start(collect, workflow_id="collect")
        wait_row(app, "collect", 3)
        gates.open("c")
        wait_row(app, "collect", 4)
        gates.open("a")
        assert handle.result(HANG) == ["B", "C", "A"]


# -- wait_all -----------------------------------------------------------------------------------


def make_wait_all_app(path: str, gates: Gates) -> tuple[ld.App, Any]:
    app = ld.App(path, grace=2.0)

    @app.step()
    def fail(name: str) -> str:
        gates.wait(name)
        raise {"a": ValueError, "b": KeyError}[name](f"{name} failed")

    @app.step()
    def fine(name: str) -> str:
        gates.wait(name)
        return name

    @app.workflow()
    def gather() -> list[str]:
        ok = ld.go(fine, "ok")  # step 0
        a = ld.go(fail, "a")  # step 1
        b = ld.go(fail, "b")  # step 2
        late = ld.go(fine, "late")  # step 3
        values = ld.wait_all([late, ok])
        try:
            ld.wait_all([ok, a, b, late])
        except Exception as exc:
            return [*values, f"{type(exc).__name__}: {exc.args[0]}"]
        return values

    return app, gather


@pytest.mark.parametrize("crash", [False, True])
def test_wait_all_raises_the_first_failure_in_argument_order(db_path: str, crash: bool) -> None:
    gates = Gates()
    app, gather = make_wait_all_app(db_path, gates)
    switch = crash_at(app, "before_outcome") if crash else None
    with app:
        handle = app.start(gather, workflow_id="gather")
        gates.open("b")  # b (later argument) fails first
        wait_row(app, "gather", 2)
        gates.open("late")  # values finish in the reverse of argument order
        wait_row(app, "gather", 3)
        gates.open("ok", "a")
        if switch is None:
            assert handle.result(HANG) == ["late", "ok", "ValueError: a failed"]
        else:
            assert switch.wait(HANG)  # the outcome was not written: the next launch replays

    app2, _ = make_wait_all_app(db_path, Gates())  # everything is recorded, nothing runs
    with app2:
        assert app2.handle("gather").result(HANG) == ["late", "ok", "ValueError: a failed"]
        steps = app2.steps("gather")
    assert error_type(steps[2]) == "KeyError"
    assert error_type(steps[1]) == "ValueError"
    assert [s.kind for s in steps] == ["go"] * 4  # wait_all takes no step number


# -- durable time ---------------------------------------------------------------------------------


def make_timer_app(path: str, clock: FakeClock) -> tuple[ld.App, Any]:
    app = ld.App(path, clock=clock)

    @app.workflow()
    def alarm() -> str:
        ld.after(60).result()
        return "fired"

    return app, alarm


def test_after_deadline_is_kept_across_a_restart(db_path: str) -> None:
    clock = FakeClock()
    start = clock.now()
    app, alarm = make_timer_app(db_path, clock)
    with app:
        app.start(alarm, workflow_id="alarm")
        timer = wait_row(app, "alarm", 0)
    assert (timer.kind, timer.output) == ("after", start + 60)

    clock.advance(30)
    app2, _ = make_timer_app(db_path, clock)
    with app2:
        handle = app2.handle("alarm")
        with pytest.raises(ld.WaitTimeoutError):
            handle.result(timeout=0.3)  # 30 s left: still pending (a restart must not rearm it)
        assert handle.status() == ld.Status.PENDING
        clock.advance(30)
        assert handle.result(HANG) == "fired"
        steps = app2.steps("alarm")
    assert [(s.step, s.kind, s.output) for s in steps] == [(0, "after", start + 60)]


def test_sleep_wakes_at_the_recorded_instant_after_a_restart(db_path: str) -> None:
    clock = FakeClock()
    start = clock.now()

    def make(db_path: str) -> tuple[ld.App, Any]:
        app = ld.App(db_path, clock=clock)

        @app.workflow()
        def nap() -> float:
            ld.sleep(100)
            return ld.now().timestamp()

        return app, nap

    app, nap = make(db_path)
    with app:
        app.start(nap, workflow_id="nap")
        wait_row(app, "nap", 0)
        clock.advance(60)
    app2, _ = make(db_path)
    with app2:
        handle = app2.handle("nap")
        with pytest.raises(ld.WaitTimeoutError):
            handle.result(timeout=0.3)
        clock.advance(40)
        assert handle.result(HANG) == start + 100
        assert app2.steps("nap")[0].output == start + 100


def make_patience_app(
    path: str, clock: FakeClock, gates: Gates, calls: Calls
) -> tuple[ld.App, Any]:
    app = ld.App(path, clock=clock, grace=2.0)

    @app.step()
    def slow() -> str:
        gates.wait("slow")
        return "value"

    @app.step()
    def note(text: str) -> str:
        calls.add("note", text)
        return text

    @app.workflow()
    def patience() -> str:
        f = ld.go(slow)  # step 0
        gates.wait("select")
        try:
            ld.select([f], timeout=10)  # step 1
        except ld.WaitTimeoutError:
            return note("timed out")
        return note(f"got {f.result()}")

    return app, patience


@pytest.mark.parametrize("crash", [False, True])
def test_select_timeout_raises_live_and_on_replay(db_path: str, crash: bool) -> None:
    clock, gates, calls = FakeClock(), Gates("select"), Calls()
    app, patience = make_patience_app(db_path, clock, gates, calls)
    switch = crash_at(app, "after_decision") if crash else None
    with app:
        handle = app.start(patience, workflow_id="patience")
        opened = wait_for_open_select(app, "patience", 1)
        assert opened.candidates == [0]
        clock.advance(10)
        if switch is None:
            assert handle.result(HANG) == "timed out"
            steps = app.steps("patience")
        else:
            assert switch.wait(HANG)
        gates.open("slow")
    if switch is not None:
        assert calls.count("note") == 0
        gates2, calls = Gates("slow"), Calls()  # the step is fast now; the recorded timeout wins
        app2, _ = make_patience_app(db_path, clock, gates2, calls)
        with app2:
            wait_row(app2, "patience", 0)
            gates2.open("select")
            assert app2.handle("patience").result(HANG) == "timed out"
            steps = app2.steps("patience")
    assert calls.log == [("note", "timed out")]
    decision = next(s for s in steps if s.step == 1)
    assert (decision.kind, decision.candidates, decision.winner) == ("select", [0], -1)


def test_select_timeout_deadline_is_kept_across_a_restart(db_path: str) -> None:
    clock = FakeClock()
    start = clock.now()

    def make(db_path: str) -> tuple[ld.App, Any]:
        app = ld.App(db_path, clock=clock)

        @app.workflow()
        def impatient() -> str:
            try:
                ld.select([ld.after(1000)], timeout=10)
            except ld.WaitTimeoutError:
                return "timed out"
            return "timer"

        return app, impatient

    app, impatient = make(db_path)
    with app:
        app.start(impatient, workflow_id="impatient")
        opened = wait_for_open_select(app, "impatient", 1)
        clock.advance(6)
    assert (opened.kind, opened.candidates, opened.finished_at) == ("select", [0], None)
    app2, _ = make(db_path)
    with app2:
        handle = app2.handle("impatient")
        with pytest.raises(ld.WaitTimeoutError):
            handle.result(timeout=0.3)  # 4 s of the recorded 10 s deadline are left
        clock.advance(4)
        assert handle.result(HANG) == "timed out"
        steps = app2.steps("impatient")
    assert [(s.step, s.kind, s.winner) for s in steps] == [(0, "after", None), (1, "select", -1)]
    assert steps[0].output == start + 1000


# -- select edge cases ---------------------------------------------------------------------------


def test_select_on_an_empty_list_is_a_value_error_and_takes_no_step(db_path: str) -> None:
    app = ld.App(db_path)

    @app.step()
    def one() -> int:
        return 1

    @app.workflow()
    def empty() -> list[object]:
        with pytest.raises(ValueError, match="at least one future"):
            ld.select([])
        with pytest.raises(ValueError):
            ld.select(iter(()))
        f = ld.go(one)
        return [f.step, f.result()]

    with app:
        assert app.run(empty, workflow_id="empty") == [0, 1]
        assert [s.kind for s in app.steps("empty")] == ["go"]


def test_duplicates_and_settled_ties_pick_the_lowest_step(db_path: str) -> None:
    gates = Gates()
    app = ld.App(db_path, grace=2.0)

    @app.step()
    def value(n: int) -> int:
        gates.wait(str(n))
        return n

    @app.workflow()
    def ties() -> list[object]:
        a, b, c = ld.go(value, 0), ld.go(value, 1), ld.go(value, 2)  # steps 0, 1, 2
        assert ld.wait_all([c, c, a, b]) == [2, 2, 0, 1]
        first = ld.select([c, b, a])  # step 3: all settled, c first -> a (lowest step) wins
        dup = ld.select([b, b, c])  # step 4: the first of duplicates
        order = [f.result() for f in ld.as_completed([c, b, c, b])]  # steps 5, 6
        return [first is a, dup is b, order]

    with app:
        handle = app.start(ties, workflow_id="ties")
        gates.open("2")  # finish in the reverse of step order
        wait_row(app, "ties", 2)
        gates.open("1")
        wait_row(app, "ties", 1)
        gates.open("0")
        assert handle.result(HANG) == [True, True, [1, 2]]
        decisions = [(s.step, s.kind, s.candidates, s.winner) for s in app.steps("ties")[3:]]
    assert decisions == [
        (3, "select", [2, 1, 0], 2),
        (4, "select", [1, 1, 2], 0),
        (5, "as_completed", [2, 1], 1),
        (6, "as_completed", [2], 0),
    ]


def test_select_returns_the_winning_future_and_its_error(db_path: str) -> None:
    gates = Gates()
    app = ld.App(db_path, grace=2.0)

    @app.step()
    def boom() -> int:
        raise LookupError("nope")

    @app.step()
    def held() -> int:
        gates.wait("held")
        return 7

    @app.workflow()
    def errs() -> list[object]:
        good, bad = ld.go(held), ld.go(boom)
        winner = ld.select([good, bad])  # an error settles a future too
        error = winner.exception()
        gates.open("held")
        return [winner is bad, type(error).__name__, str(error), good.result(), bad.done()]

    with app:
        assert app.run(errs, workflow_id="errs") == [True, "LookupError", "nope", 7, True]


# -- thread budget ----------------------------------------------------------------------------


@pytest.mark.parametrize("suspend_after", [2.0, 0.01])
def test_step_pool_of_one_with_nested_waits_completes(db_path: str, suspend_after: float) -> None:
    app = ld.App(db_path, workers=1, workflow_threads=2, suspend_after=suspend_after)

    @app.step()
    def square(x: int) -> int:
        return x * x

    @app.workflow()
    def nested(n: int) -> list[int]:
        a, b = ld.go(square, n), ld.go(square, n + 1)
        first = ld.select([a, b])
        c = ld.go(square, 3)
        rest = ld.select([c, ld.after(3600)])
        both = ld.wait_all([a, b, c])
        inline = square(2)  # an inline step runs in the workflow's own thread
        return [first.step in (0, 1), rest is c, *both, inline]

    with app:
        handles = [app.start(nested, n, workflow_id=f"nested-{n}") for n in range(12)]
        results = [h.result(HANG) for h in handles]
    assert results == [[True, True, n * n, (n + 1) ** 2, 9, 4] for n in range(12)]


def test_a_thousand_sleeping_workflows_use_a_bounded_number_of_threads(db_path: str) -> None:
    clock = FakeClock()
    app = ld.App(db_path, clock=clock, durability="normal")
    count = 1000

    @app.workflow()
    def nap(i: int) -> int:
        ld.sleep(3600)
        return i

    peak = threading.active_count()
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, threading.active_count())
            stop.wait(0.001)

    sampler = threading.Thread(target=sample, name="sampler")
    sampler.start()
    try:
        with app:
            handles = [app.start(nap, i, workflow_id=f"nap-{i}") for i in range(count)]
            asleep: set[str] = set()

            def all_asleep() -> bool:
                for h in handles:
                    if h.workflow_id not in asleep and app.steps(h.workflow_id):
                        asleep.add(h.workflow_id)
                return len(asleep) == count

            eventually(all_asleep, "every workflow to record its sleep", timeout=3 * HANG)
            assert len(app.list_workflows(status=ld.Status.PENDING)) == count
            assert threading.active_count() < 100
            clock.advance(3600)
            assert [h.result(HANG) for h in handles] == list(range(count))
            assert len(app.list_workflows(status=ld.Status.SUCCEEDED)) == count
    finally:
        stop.set()
        sampler.join()
    print(f"peak threads with {count} sleeping workflows: {peak}")
    assert peak < 100


def test_a_long_wait_unwinds_and_replay_attaches_to_the_running_step(db_path: str) -> None:
    gates, calls = Gates(), Calls()
    entries = Counter[str]()
    app = ld.App(db_path, workflow_threads=1, suspend_after=0.05, grace=2.0)

    @app.step()
    def double(x: int) -> int:
        calls.add("double", x)
        gates.wait(f"double-{x}")
        return 2 * x

    @app.workflow()
    def waiter(x: int) -> int:
        entries["waiter"] += 1
        return sum(ld.wait_all([ld.go(double, x), ld.go(double, x + 1)]))

    @app.workflow()
    def quick(n: int) -> int:
        return n

    with app:
        handle = app.start(waiter, 20, workflow_id="waiter")
        # The only workflow thread is free again only if the waiting run unwound.
        assert app.run(quick, 1, workflow_id="quick-1") == 1
        gates.open("double-21")  # step 1 settles: the workflow is replayed while step 0 runs
        wait_row(app, "waiter", 1)
        eventually(lambda: entries["waiter"] >= 2, "the replay", timeout=HANG)
        assert app.run(quick, 2, workflow_id="quick-2") == 2  # ...and unwound again
        gates.open("double-20")
        assert handle.result(HANG) == 40 + 42
        steps = app.steps("waiter")
    assert sorted(calls.log) == [("double", 20), ("double", 21)]  # each body ran once
    assert entries["waiter"] >= 3
    assert [(s.kind, s.output) for s in steps] == [("go", 40), ("go", 42)]


# -- misuse -------------------------------------------------------------------------------------


def test_go_inside_a_step_is_a_usage_error(db_path: str) -> None:
    app = ld.App(db_path)

    @app.step()
    def leaf() -> int:
        return 1

    @app.step()
    def nests() -> int:
        return ld.go(leaf).result()

    @app.workflow()
    def wf() -> int:
        return nests()

    with app, pytest.raises(ld.UsageError, match="inside step 0"):
        app.run(wf, workflow_id="wf")


def test_go_from_another_thread_with_a_copied_context_is_a_usage_error(db_path: str) -> None:
    app = ld.App(db_path)

    @app.step()
    def leaf() -> int:
        return 1

    @app.workflow()
    def wf() -> list[object]:
        context = contextvars.copy_context()
        caught: list[BaseException] = []

        def other() -> None:
            try:
                context.run(ld.go, leaf)
            except BaseException as exc:
                caught.append(exc)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        f = ld.go(leaf)  # the failed call took no step number
        return [type(caught[0]).__name__, "not the workflow's own" in str(caught[0]), f.step]

    with app:
        assert app.run(wf, workflow_id="wf") == ["UsageError", True, 0]


def test_durable_calls_outside_a_workflow_raise_not_in_workflow() -> None:
    with pytest.raises(ld.NotInWorkflowError, match="inside a workflow"):
        ld.go(print, "x")
    for call in (lambda: ld.select([]), lambda: ld.as_completed([]), lambda: ld.wait_all([]),
                 lambda: ld.after(1), lambda: ld.sleep(1), ld.cancelled):
        with pytest.raises(ld.NotInWorkflowError):
            call()


def test_futures_do_not_cross_workflows(db_path: str) -> None:
    app = ld.App(db_path)
    shelf: list[ld.Future[int]] = []

    @app.step()
    def leaf() -> int:
        return 1

    @app.workflow()
    def producer() -> int:
        f = ld.go(leaf)
        shelf.append(f)
        return f.result()

    @app.workflow()
    def thief() -> str:
        with pytest.raises(ld.UsageError, match="another workflow run"):
            ld.select(shelf)
        with pytest.raises(ld.UsageError):
            shelf[0].result()
        return "refused"

    with app:
        assert app.run(producer, workflow_id="producer") == 1
        assert app.run(thief, workflow_id="thief") == "refused"


def test_go_rejects_a_workflow(db_path: str) -> None:
    app = ld.App(db_path)

    @app.workflow()
    def child() -> int:
        return 1

    @app.workflow()
    def parent() -> str:
        with pytest.raises(ld.UsageError, match="is a workflow"):
            ld.go(child)
        return "ok"

    with app:
        assert app.run(parent, workflow_id="parent") == "ok"


# -- cancellation -------------------------------------------------------------------------------


def test_cancelled_future_that_never_started_never_runs(db_path: str) -> None:
    gates, calls = Gates(), Calls()
    app = ld.App(db_path, workers=1, grace=2.0)

    @app.step()
    def block() -> str:
        gates.wait("block")
        return "blocker"

    @app.step()
    def victim() -> str:
        calls.add("victim")
        return "should not run"

    @app.workflow()
    def wf() -> list[object]:
        blocker = ld.go(block)  # holds the only step thread
        queued = ld.go(victim)  # waits for it
        delivered = queued.cancel()
        gates.open("block")
        error = queued.exception()
        return [delivered, type(error).__name__, blocker.result(), queued.cancel()]

    with app:
        assert app.run(wf, workflow_id="wf") == [True, "StepCancelledError", "blocker", False]
        steps = app.steps("wf")
    assert calls.log == []
    assert error_type(steps[1]) == "StepCancelledError"


def test_running_step_observes_cancellation(db_path: str) -> None:
    gates = Gates()
    app = ld.App(db_path, grace=2.0)

    def until_cancelled(name: str) -> None:
        gates.open(name)
        eventually(ld.cancelled, f"{name} to see its cancellation", timeout=HANG)

    @app.step()
    def keeps() -> str:
        until_cancelled("keeps")
        return "stopped early"  # finished work is kept

    @app.step()
    def gives_up() -> str:
        until_cancelled("gives_up")
        raise RuntimeError("interrupted")  # raising after a cancel records a cancellation

    @app.workflow()
    def wf() -> list[object]:
        assert not ld.cancelled()
        kept, dropped = ld.go(keeps), ld.go(gives_up)
        gates.wait("keeps")
        gates.wait("gives_up")
        assert kept.cancel() and dropped.cancel()
        return [kept.result(), type(dropped.exception()).__name__]

    with app:
        assert app.run(wf, workflow_id="wf") == ["stopped early", "StepCancelledError"]
        steps = app.steps("wf")
    assert steps[0].output == "stopped early"
    assert error_type(steps[1]) == "StepCancelledError"


def test_cancelling_a_timer_future(db_path: str) -> None:
    app = ld.App(db_path, clock=FakeClock())

    @app.workflow()
    def wf() -> list[object]:
        timer = ld.after(3600)
        cancelled = timer.cancel()
        winner = ld.select([timer])
        return [cancelled, winner is timer, type(timer.exception()).__name__]

    with app:
        assert app.run(wf, workflow_id="wf") == [True, True, "StepCancelledError"]


# -- threads --------------------------------------------------------------------------------------


def test_close_leaves_no_threads_behind(db_path: str) -> None:
    clock = FakeClock()
    app = ld.App(db_path, clock=clock, workers=4)

    @app.step()
    def work(n: int) -> int:
        return n

    @app.workflow()
    def busy() -> int:
        return sum(ld.wait_all([ld.go(work, n) for n in range(8)]))

    @app.workflow()
    def sleepy() -> None:
        ld.select([ld.go(work, 1), ld.after(3600)])
        ld.sleep(7200)

    with app:
        assert app.run(busy, workflow_id="busy") == 28
        handle = app.start(sleepy, workflow_id="sleepy")
        wait_row(app, "sleepy", 3)  # sleeping now
        assert handle.status() == ld.Status.PENDING
        assert engine_thread_names() != []
    assert engine_thread_names() == []


# -- Future methods -----------------------------------------------------------------------------


def test_future_result_and_exception_with_timeout_are_journaled(db_path: str) -> None:
    clock, gates = FakeClock(), Gates()
    app = ld.App(db_path, clock=clock, grace=2.0)
    shelf: list[ld.Future[str]] = []

    def settle_the_step_right_after_the_timeout(point: str, info: object) -> None:
        # The select just recorded "timed out"; the step then settles before exception()
        # looks at it. The recorded timeout must still win (a replay may not see the step).
        if point == "after_decision" and gates.is_open("race-the-decision"):
            gates.open("slow")
            eventually(shelf[0].done, "the step to settle", timeout=HANG)

    @app.step()
    def slow() -> str:
        gates.wait("slow")
        return "late"

    @app.workflow()
    def wf() -> list[object]:
        f = ld.go(slow)  # step 0
        shelf.append(f)
        assert not f.done()
        outcomes: list[object] = []
        for _ in range(2):  # steps 1 and 2: result(timeout), then exception(timeout)
            try:
                outcomes.append(f.result(timeout=5) if not outcomes else f.exception(timeout=5))
            except ld.WaitTimeoutError:
                outcomes.append("timed out")
        return [*outcomes, f.result(), f.done(), f.exception()]

    # Only the observer matters: it sees every crash point; the crash itself never fires.
    crash_at(app, "recovery", when=lambda info: False,
             observer=settle_the_step_right_after_the_timeout)
    with app:
        handle = app.start(wf, workflow_id="wf")
        wait_for_open_select(app, "wf", 1)
        clock.advance(5)
        wait_for_open_select(app, "wf", 2)
        gates.open("race-the-decision")
        clock.advance(5)
        assert handle.result(HANG) == ["timed out", "timed out", "late", True, None]
        decisions = [(s.step, s.kind, s.winner) for s in app.steps("wf")[1:]]
    assert decisions == [(1, "select", -1), (2, "select", -1)]


def test_a_loser_that_finishes_after_its_workflow_is_still_recorded(db_path: str) -> None:
    gate, slow_started = threading.Event(), threading.Event()
    app = ld.App(db_path)

    @app.step()
    def fast() -> str:
        # A loser still queued when its workflow ends is cancelled before it starts (never
        # recorded); this test is about one already running, so let it start first.
        slow_started.wait(HANG)
        return "fast"

    @app.step()
    def slow() -> str:
        slow_started.set()
        gate.wait(HANG)
        return "slow"

    @app.workflow()
    def race() -> str:
        winner = ld.select([ld.go(fast), ld.go(slow)])
        return str(winner.result())

    with app:
        assert app.run(race, workflow_id="late-loser") == "fast"
        gate.set()
        loser = wait_row(app, "late-loser", 1)
        assert (loser.kind, loser.output, loser.error) == ("go", "slow", None)


def test_close_interrupts_steps_without_recording_a_cancellation(db_path: str) -> None:
    gate, started = threading.Event(), threading.Event()

    def make(path: str) -> tuple[ld.App, Any]:
        app = ld.App(path, workers=1, grace=0.5)

        @app.step()
        def work(i: int) -> int:
            started.set()
            for _ in range(30):  # a cooperative body: it stops if asked to
                if ld.cancelled():
                    raise RuntimeError("asked to stop")
                gate.wait(0.01)
            return i

        @app.workflow()
        def fan() -> int:
            return sum(ld.wait_all([ld.go(work, i) for i in range(3)]))

        return app, fan

    app, fan = make(db_path)
    with app:
        app.start(fan, workflow_id="interrupted")
        started.wait(HANG)  # one body runs on the single worker; two more are queued
    gate.set()
    app, fan = make(db_path)
    with app:
        assert app.handle("interrupted").result(HANG) == 3
        assert all(s.error is None for s in app.steps("interrupted"))


def test_wait_all_wakes_the_workflow_once_not_once_per_step(db_path: str) -> None:
    # Each wake-up of the workflow thread is a GIL hand-off the finishing steps wait behind;
    # wait_all can only return when the last step settles, so only that one wakes it.
    wakes = Counter[str]()

    class CountingClock(SystemClock):
        def wait(self, cond: threading.Condition, deadline: float | None,
                 timeout: float | None = None) -> None:
            if threading.current_thread().name.startswith("litedurable-workflow"):
                wakes["workflow"] += 1
            super().wait(cond, deadline, timeout)

    app = ld.App(db_path, clock=CountingClock(), suspend_after=HANG * 3)
    gates = Gates()

    @app.step()
    def work(i: int) -> int:
        gates.wait(f"step-{i}")
        return i

    @app.workflow()
    def fan() -> int:
        return sum(ld.wait_all([ld.go(work, i) for i in range(6)]))

    with app:
        handle = app.start(fan)
        for i in range(6):
            gates.open(f"step-{i}")
            wait_row(app, handle.workflow_id, i)
            time.sleep(0.02)  # let an eager wake-up happen (only the old code's failure needs it)
        assert handle.result(HANG) == 15
    assert wakes["workflow"] == 1
