"""A workflow's life: child workflows, deadlines, cancellation, resume and fork.

Every test runs on a ``FakeClock``: deadlines and timers pass when the test advances the clock,
never by waiting. Real time appears only as hang guards (``eventually``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest
from support import crash_then_close, eventually, inspect_journal, stored_status

import litedurable as ld
from litedurable._app import replay_check
from litedurable.testing import FakeClock, crash_at

pytestmark = pytest.mark.both_backends  # each test runs on SQLite and on PostgreSQL


def sleeping(app: ld.App, *workflow_ids: str) -> bool:
    """True once each workflow has recorded its durable sleep (so advancing the clock wakes it)."""
    try:
        return all(any(s.kind == "sleep" for s in app.steps(w)) for w in workflow_ids)
    except ld.WorkflowNotFoundError:
        return False


# -- child workflows ------------------------------------------------------------------------


def _family(path: str, clock: FakeClock, runs: Counter[str]) -> tuple[ld.App, Any, Any]:
    app = ld.App(path, clock=clock, app_version="v1", suspend_after=0.2)

    @app.step(name="mark")
    def mark(x: int) -> None:
        runs[f"child-{x}"] += 1

    @app.workflow(name="child")
    def child(x: int) -> int:
        mark(x)
        ld.sleep(10)
        return x * 10

    @app.workflow(name="parent")
    def parent() -> list[int]:
        first = app.start(child, 1)
        second = app.start(child, 2, workflow_id="named-child")
        return [first.result(), second.result()]

    return app, child, parent


def test_child_workflows_are_recorded_steps_with_derived_ids(db_path):
    clock, runs = FakeClock(), Counter[str]()
    app, _, parent = _family(db_path, clock, runs)
    with app:
        handle = app.start(parent, workflow_id="p")
        eventually(lambda: sleeping(app, "p/0", "named-child"), "both children asleep")
        clock.advance(10)
        assert handle.result(timeout=30) == [10, 20]
        steps = app.steps("p")
        children = {w.workflow_id: w for w in app.list_workflows(name="child")}
    assert [(s.step, s.kind, s.name) for s in steps] == [
        (0, "child", "child"), (1, "child", "child"),
        (2, "wait", "p/0"), (3, "wait", "named-child"),
    ]
    assert [s.output for s in steps] == ["p/0", "named-child", 10, 20]
    assert set(children) == {"p/0", "named-child"}
    assert {c.parent_id for c in children.values()} == {"p"}
    assert runs == {"child-1": 1, "child-2": 1}


def test_a_parent_crashing_after_starting_a_child_does_not_start_it_twice(db_path):
    clock, runs = FakeClock(), Counter[str]()
    app, _, parent = _family(db_path, clock, runs)
    # The first child's first step runs before the parent has recorded starting the child.
    switch = crash_at(app, "before_step", when=lambda info: info.get("workflow_id") == "p/0")
    crash_then_close(app, switch, lambda a: a.start(parent, workflow_id="p"))
    app, _, parent = _family(db_path, clock, runs)
    with app:
        eventually(lambda: sleeping(app, "p/0", "named-child"), "both children asleep")
        clock.advance(10)
        assert app.handle("p").result(timeout=30) == [10, 20]
        assert len(app.list_workflows(name="child")) == 2  # the replayed starts made no more
    # child-1 crashed before its step; child-2's step may have run before the crash but not
    # been committed (steps are at least once).
    assert runs["child-1"] == 1 and runs["child-2"] in (1, 2)
    with inspect_journal(db_path) as journal:
        assert [s.kind for s in journal.load_steps("p")] == ["child", "child", "wait", "wait"]


def test_a_child_handle_races_a_timer_in_select(db_path):
    clock = FakeClock()
    app = ld.App(db_path, clock=clock, suspend_after=0.2)
    gate = threading.Event()

    @app.step(name="slow")
    def slow() -> str:
        assert gate.wait(30)
        return "slow done"

    @app.workflow(name="kid")
    def kid() -> str:
        return slow()

    @app.workflow(name="racer")
    def racer() -> tuple[str, str]:
        child = app.start(kid)
        winner = ld.select([child, ld.after(5)])
        first = "child" if winner is child else "timer"
        return first, child.result()

    with app:
        handle = app.start(racer, workflow_id="r")
        eventually(lambda: [s for s in app.steps("r") if s.kind == "after"], "the timer")
        clock.advance(6)
        eventually(lambda: [s for s in app.steps("r") if s.kind == "select"], "the decision")
        gate.set()
        assert handle.result(timeout=30) == ("timer", "slow done")
        [decision] = [s for s in app.steps("r") if s.kind == "select"]
    assert decision.candidates == [0, 1] and decision.winner == 1


@pytest.mark.parametrize("then", ["start a child", "wait on a handle", "read a status"])
def test_a_workflow_acting_on_workflows_while_its_app_closes_stays_pending(db_path, then):
    """``close()`` gives a running step its grace period; the workflow then goes on to its
    next call. When that call started a child or waited on (or read) a handle, the closing
    App answered ``UsageError`` ("through another App") or ``AppClosedError``, the workflow
    function raised it, and the workflow was recorded ``failed`` for good. It must stay
    pending, like a workflow stopped at any other call by a close."""
    runs: Counter[str] = Counter()

    def make() -> tuple[ld.App, Any, Any]:
        app = ld.App(db_path, grace=30.0)

        @app.step(name="slow")
        def slow() -> int:
            runs["slow"] += 1
            if runs["slow"] == 1:  # the first run returns only once close() has begun
                eventually(lambda: app._runtime is None, "close() to begin")
            return 1

        @app.workflow(name="kid")
        def kid() -> int:
            return 2

        @app.workflow(name="acts")
        def acts(then: str) -> int:
            x = slow()
            if then == "start a child":
                return x + app.start(kid).result()
            if then == "wait on a handle":
                return x + app.handle("other").result()
            return x + len(app.handle("other").status())

        return app, kid, acts

    app, kid, acts = make()
    with app:
        app.run(kid, workflow_id="other")
        app.start(acts, then, workflow_id="acts")
        eventually(lambda: runs["slow"] == 1, "the step to run")
    assert stored_status(db_path, "acts") == "pending"

    app, kid, acts = make()
    with app:
        assert app.handle("acts").result(timeout=30) == 1 + (9 if then == "read a status" else 2)
    assert runs["slow"] == 1  # recorded during the grace period: not run again


def test_a_child_id_taken_by_another_workflow_is_a_recorded_conflict(db_path):
    app = ld.App(db_path, clock=FakeClock())

    @app.workflow(name="other")
    def other() -> int:
        return 1

    @app.workflow(name="kid")
    def kid() -> int:
        return 2

    @app.workflow(name="parent")
    def parent() -> str:
        try:
            app.start(kid, workflow_id="taken")
        except ld.WorkflowConflictError as exc:
            return f"conflict: {'taken' in str(exc)}"
        return "no conflict"

    with app:
        app.run(other, workflow_id="taken")
        assert app.run(parent, workflow_id="p") == "conflict: True"
        [step] = app.steps("p")
    assert step.kind == "child" and step.error is not None and "WorkflowConflictError" in step.error


def test_start_keywords_are_checked(db_path):
    app = ld.App(db_path, clock=FakeClock())

    @app.workflow(name="wf")
    def wf() -> None: ...

    with app:
        with pytest.raises(ld.UsageError, match="child"):
            app.start(wf, detached=True)
        with pytest.raises(ld.UsageError, match="True or False"):
            app.start(wf, detached="yes")
        with pytest.raises(ValueError, match="non-negative"):
            app.start(wf, timeout=-1)


# -- cancellation ---------------------------------------------------------------------------


def _tree(path: str, clock: FakeClock) -> tuple[ld.App, Any]:
    app = ld.App(path, clock=clock, suspend_after=0.2)

    @app.workflow(name="leaf")
    def leaf() -> str:
        ld.sleep(100)
        return "leaf done"

    @app.workflow(name="root")
    def root() -> list[str]:
        attached = app.start(leaf, workflow_id="attached")
        detached = app.start(leaf, workflow_id="detached", detached=True)
        return [attached.result(), detached.result()]

    return app, root


def test_cancelling_a_parent_cancels_its_children_but_not_detached_ones(db_path):
    clock = FakeClock()
    app, root = _tree(db_path, clock)
    with app:
        handle = app.start(root, workflow_id="root")
        eventually(lambda: sleeping(app, "attached", "detached"), "both children asleep")
        assert handle.cancel() is True
        assert handle.cancel() is False  # already cancelled
        statuses = {w.workflow_id: w.status for w in app.list_workflows()}
        assert statuses == {"root": "cancelled", "attached": "cancelled", "detached": "pending"}
        with pytest.raises(ld.WorkflowCancelledError, match="root"):
            app.handle("attached").result(timeout=30)
        clock.advance(100)
        assert app.handle("detached").result(timeout=30) == "leaf done"
        with pytest.raises(ld.WorkflowCancelledError):
            handle.result(timeout=30)


def test_a_running_step_sees_cancellation_and_waiting_on_a_cancelled_child_raises(db_path):
    clock = FakeClock()
    app = ld.App(db_path, clock=clock)
    started = threading.Event()

    @app.step(name="patient")
    def patient() -> str:
        started.set()
        while not ld.cancelled():
            time.sleep(0.001)
        return "noticed"

    @app.workflow(name="kid")
    def kid() -> str:
        return patient()

    @app.workflow(name="parent")
    def parent() -> str:
        child = app.start(kid, workflow_id="kid")
        try:
            return child.result()
        except ld.WorkflowCancelledError as exc:
            return f"child cancelled: {exc}"

    with app:
        handle = app.start(parent, workflow_id="parent")
        assert started.wait(30)
        app.cancel("kid")
        assert handle.result(timeout=30) == "child cancelled: workflow 'kid' was cancelled"
        [step] = eventually(lambda: app.steps("kid"), "the step's row, written after the cancel")
    assert step.output == "noticed"  # the inline step saw ld.cancelled() and returned


# -- deadlines ------------------------------------------------------------------------------


def test_a_deadline_cancels_the_workflow_and_its_children(db_path):
    clock = FakeClock()
    app, root = _tree(db_path, clock)
    with app:
        handle = app.start(root, workflow_id="root", timeout=30)
        eventually(lambda: sleeping(app, "attached", "detached"), "both children asleep")
        clock.advance(29)
        assert handle.status() is ld.Status.PENDING
        clock.advance(2)
        with pytest.raises(ld.WorkflowTimedOutError, match="deadline") as info:
            handle.result(timeout=30)
        assert isinstance(info.value, ld.WorkflowCancelledError)
        assert not isinstance(info.value, TimeoutError)
        with pytest.raises(ld.WorkflowTimedOutError):
            app.handle("attached").result(timeout=30)
        assert app.handle("detached").status() is ld.Status.PENDING
        [root_info] = app.list_workflows(name="root")
        assert root_info.status is ld.Status.CANCELLED
        assert root_info.error is not None and "WorkflowTimedOutError" in root_info.error


def test_a_deadline_that_passed_while_the_process_was_down_is_honoured(db_path):
    clock = FakeClock()
    ran_after_sleep = Counter[str]()

    def build() -> tuple[ld.App, Any]:
        app = ld.App(db_path, clock=clock)

        @app.step(name="after_sleep")
        def after_sleep() -> None:
            ran_after_sleep["yes"] += 1

        @app.workflow(name="sleepy", timeout=60)
        def sleepy() -> None:
            ld.sleep(3600)
            after_sleep()

        return app, sleepy

    app, sleepy = build()
    with app:
        app.start(sleepy, workflow_id="s")
        eventually(lambda: sleeping(app, "s"), "the sleep")
    assert stored_status(db_path, "s") == "pending"
    clock.advance(61)  # nothing runs meanwhile
    app, _ = build()
    with app, pytest.raises(ld.WorkflowTimedOutError):
        app.handle("s").result(timeout=30)
    assert ran_after_sleep == {}


def test_a_running_step_sees_its_deadline(db_path):
    clock = FakeClock()
    app = ld.App(db_path, clock=clock)
    started = threading.Event()

    @app.step(name="spin")
    def spin() -> str:
        started.set()
        while not ld.cancelled():
            time.sleep(0.001)
        return "stopped"

    @app.workflow(name="wf")
    def wf() -> str:
        return spin()

    with app:
        handle = app.start(wf, workflow_id="w", timeout=5)
        assert started.wait(30)
        clock.advance(6)
        with pytest.raises(ld.WorkflowTimedOutError):
            handle.result(timeout=30)
        eventually(lambda: app.steps("w"), "the step row")
        assert [s.output for s in app.steps("w")] == ["stopped"]


# -- resume and fork ------------------------------------------------------------------------


def test_resume_a_timed_out_workflow_and_its_children(db_path):
    clock = FakeClock()
    app, root = _tree(db_path, clock)
    with app:
        handle = app.start(root, workflow_id="root", timeout=30)
        eventually(lambda: sleeping(app, "attached", "detached"), "both children asleep")
        clock.advance(31)
        with pytest.raises(ld.WorkflowTimedOutError):
            handle.result(timeout=30)
        resumed = app.resume("root")
        assert resumed == handle and handle.status() is ld.Status.PENDING
        assert app.handle("attached").status() is ld.Status.PENDING  # its cancel is undone
        clock.advance(100)  # both sleeps (recorded to end at 100) are over
        assert handle.result(timeout=30) == ["leaf done", "leaf done"]


def test_resume_after_the_recovery_limit(db_path):
    clock = FakeClock()
    crashing = True
    runs = Counter[str]()

    def build() -> tuple[ld.App, Any, Any]:
        app = ld.App(db_path, clock=clock, app_version="v1")

        @app.step(name="work")
        def work() -> str:
            runs["work"] += 1
            return "worked"

        @app.workflow(name="wf", max_recovery_attempts=1)
        def wf() -> str:
            return work()

        switch = crash_at(app, "before_step") if crashing else None
        return app, wf, switch

    app, wf, switch = build()
    assert switch is not None
    crash_then_close(app, switch, lambda a: a.start(wf, workflow_id="w"))
    for _ in range(2):  # attempt 1 crashes again; attempt 2 is past the limit
        app, _, switch = build()
        with app:
            if stored_status(db_path, "w") == "pending":
                assert switch is not None and switch.wait(30)
    assert stored_status(db_path, "w") == "exhausted"
    crashing = False
    app, _, _ = build()
    with app:
        with pytest.raises(ld.WorkflowExhaustedError):
            app.handle("w").result(timeout=30)
        assert app.resume("w").result(timeout=30) == "worked"
    assert runs == {"work": 1}


def test_fork_from_after_a_select_keeps_its_decision_and_before_it_decides_again(db_path):
    clock = FakeClock()
    app = ld.App(db_path, clock=clock)
    gates = {"a": threading.Event(), "b": threading.Event()}
    runs = Counter[str]()

    @app.step(name="fetch")
    def fetch(which: str) -> str:
        runs[which] += 1
        assert gates[which].wait(30)
        return which

    @app.step(name="tail")
    def tail(winner: str) -> str:
        return f"winner {winner}"

    @app.workflow(name="race")
    def race() -> str:
        a, b = ld.go(fetch, "a"), ld.go(fetch, "b")
        winner = ld.select([a, b])
        return tail(winner.result())

    with app:
        gates["b"].set()
        assert app.run(race, workflow_id="orig") == "winner b"
        gates["a"].set()  # the loser finishes and records its own outcome after the workflow
        steps = eventually(lambda: len(app.steps("orig")) == 4 and app.steps("orig"), "a's row")
        assert [s.kind for s in steps] == ["go", "go", "select", "step"]
        # From step 3 the select (step 2) is copied: b wins again although a is now instant.
        kept = app.fork("orig", from_step=3, new_id="kept")
        assert kept.result(timeout=30) == "winner b"
        # From step 2 the select is decided live: both are settled, the lowest step (a) wins.
        gates["b"].clear()
        redone = app.fork("orig", from_step=2, new_id="redone")
        assert redone.result(timeout=30) == "winner a"
        assert [s.winner for s in app.steps("kept") if s.kind == "select"] == [1]
    assert runs == {"a": 1, "b": 1}  # the forks replayed both go steps


def test_resume_after_a_cancel_reruns_the_steps_it_interrupted(db_path):
    clock = FakeClock()
    app = ld.App(db_path, clock=clock)
    gate, started = threading.Event(), threading.Semaphore(0)
    interrupted = threading.Semaphore(0)
    runs = Counter[str]()

    @app.step(name="fetch")
    def fetch(part: str) -> str:
        runs[part] += 1
        started.release()
        while not gate.is_set():
            if ld.cancelled():
                interrupted.release()
                raise ConnectionAbortedError(f"{part} interrupted")
            time.sleep(0.001)
        return part

    @app.workflow(name="both")
    def both() -> list[str]:
        return ld.wait_all([ld.go(fetch, "a"), ld.go(fetch, "b")])

    with app:
        handle = app.start(both, workflow_id="w")
        assert started.acquire(timeout=30) and started.acquire(timeout=30)
        handle.cancel()
        eventually(lambda: not app._runtime or not app._runtime.is_active("w"), "the run to stop")
        # Both bodies must have seen the cancellation: one still looping when the gate opens
        # returns its value late, and the resumed run rightly reuses it instead of re-running.
        assert interrupted.acquire(timeout=30) and interrupted.acquire(timeout=30)
        assert app.steps("w") == []  # interrupted steps are not recorded as failures
        gate.set()
        assert app.resume("w").result(timeout=30) == ["a", "b"]
    assert runs == {"a": 2, "b": 2}


def test_resume_leaves_alone_a_child_its_parent_cancelled_itself(db_path):
    clock = FakeClock()
    app = ld.App(db_path, clock=clock, suspend_after=0.2)

    @app.workflow(name="leaf")
    def leaf() -> str:
        ld.sleep(100)
        return "leaf done"

    @app.workflow(name="boss")
    def boss() -> list[bool]:
        fired = app.start(leaf, workflow_id="fired")
        kept = app.start(leaf, workflow_id="kept")
        first = fired.cancel()
        ld.sleep(50)
        return [first, kept.result() == "leaf done"]

    with app:
        handle = app.start(boss, workflow_id="boss", timeout=10)
        eventually(lambda: sleeping(app, "boss", "kept"), "the parent and its child asleep")
        clock.advance(11)
        with pytest.raises(ld.WorkflowTimedOutError):
            handle.result(timeout=30)
        app.resume("boss")
        assert app.handle("fired").status() is ld.Status.CANCELLED  # the parent's own decision
        assert app.handle("kept").status() is ld.Status.PENDING  # cancelled by the timeout
        clock.advance(100)
        assert handle.result(timeout=30) == [True, True]
        kinds = [s.kind for s in app.steps("boss")]
    assert kinds == ["child", "child", "cancel", "sleep", "wait"]


def test_offline_replay_follows_children_and_waits(db_path):
    app = ld.App(db_path, clock=FakeClock())

    @app.workflow(name="kid")
    def kid(x: int) -> int:
        return x + 1

    @app.workflow(name="parent")
    def parent() -> int:
        child = app.start(kid, 1)
        return child.result() + app.start(kid, 2).result()

    with app:
        assert app.run(parent, workflow_id="p") == 5
    with inspect_journal(db_path) as journal:
        row = journal.get_workflow("p")
        assert row is not None
        assert replay_check(app, journal, row) is None
