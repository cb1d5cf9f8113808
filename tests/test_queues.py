"""Queues attacked against DESIGN.md 1c, in one process: limits, order, dedup, cancel, timeouts,
children, bad input, tools, gc and recovery.

Every run of a queued job passes through one step (``work``) that counts itself in a ``Ledger``
while its body runs: ``most`` is the largest number of bodies ever running at once (per label and
in total), which is what a concurrency limit bounds, and ``starts`` is the order they began in.
A job given a ``gate`` holds its body until the test opens that gate, so a queue can be kept
full (or blocked) for as long as a test needs: no assertion here depends on timing.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, defaultdict
from typing import Any

import pytest
from support import eventually

import litedurable as ld
from litedurable.testing import FakeClock, crash_at

pytestmark = pytest.mark.both_backends  # each test runs on SQLite and on PostgreSQL

HOLD = 30.0  # seconds a gate or barrier waits before failing the job (a hang guard only)


class Ledger:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.starts: list[tuple[str, str]] = []  # (label, key)
        self.gates: defaultdict[str, threading.Event] = defaultdict(threading.Event)
        self.barrier = threading.Barrier(2, timeout=HOLD)

    def enter(self, label: str, key: str) -> None:
        with self.lock:
            for name in (label, "*"):
                self.active[name] += 1
                self.most[name] = max(self.most[name], self.active[name])
            self.starts.append((label, key))

    def leave(self, label: str) -> None:
        with self.lock:
            self.active[label] -= 1
            self.active["*"] -= 1

    def started(self, label: str | None = None) -> list[str]:
        with self.lock:
            return [k for lab, k in self.starts if label is None or lab == label]

    def running(self, n: int) -> None:
        eventually(lambda: self.active["*"] == n, lambda: f"{n} running, not {self.active}")


def make_app(path: str, led: Ledger, label: str = "A", clock: Any = None,
             **queue: Any) -> tuple[ld.App, ld.Queue, Any]:
    """An App with queue ``q`` (``queue`` = its limits) and workflow ``job``."""
    app = ld.App(path, clock=clock, suspend_after=0.2)
    q = app.queue("q", **queue)

    @app.step(name="work")
    def work(key: str, gate: str | None, label: str) -> str:
        led.enter(label, key)
        try:
            if gate == "meet":
                led.barrier.wait()
            elif gate == "fail":
                raise ValueError(f"job {key} fails")
            elif gate is not None:
                assert led.gates[gate].wait(HOLD), f"gate {gate} never opened"
        finally:
            led.leave(label)
        return key

    @app.workflow(name="job")
    def job(key: str, gate: str | None = None, part: str | None = None) -> str:
        return work(key, gate, part or label)

    return app, q, job


def stats(app: ld.App, name: str = "q") -> ld.QueueInfo:
    return next(info for info in app.list_queues() if info.name == name)


def sleeping(app: ld.App, workflow_id: str) -> bool:
    return any(s.kind == "sleep" for s in app.steps(workflow_id))


# -- 1. concurrency ---------------------------------------------------------------------------


def test_global_concurrency_holds_over_40_jobs(db_path):
    led = Ledger()
    app, q, job = make_app(db_path, led, concurrency=3)
    with app:
        handles = [q.enqueue(job, f"j{i}", gate="go") for i in range(40)]
        led.running(3)  # the queue fills up to its limit and no further
        info = stats(app)
        assert (info.running, info.enqueued, info.concurrency) == (3, 37, 3)
        assert led.active["*"] == 3
        led.gates["go"].set()
        assert [h.result(timeout=HOLD) for h in handles] == [f"j{i}" for i in range(40)]
        assert stats(app).running == stats(app).enqueued == 0
    assert led.most["*"] == 3
    assert sorted(led.started()) == sorted(f"j{i}" for i in range(40))  # each ran once


def test_two_apps_share_the_global_limit_and_each_keeps_its_worker_limit(db_path):
    led = Ledger()
    first, qa, job_a = make_app(db_path, led, "A", concurrency=3, worker_concurrency=2)
    second, qb, job_b = make_app(db_path, led, "B", concurrency=3, worker_concurrency=2)
    with first, second:
        handles = [qa.enqueue(job_a, f"a{i}", gate="go") if i % 2 else
                   qb.enqueue(job_b, f"b{i}", gate="go") for i in range(40)]
        led.running(3)
        # 3 at once, at most 2 in one App: both Apps hold some.
        assert 1 <= led.active["A"] <= 2 and 1 <= led.active["B"] <= 2
        led.gates["go"].set()
        for h in handles:
            h.result(timeout=HOLD)
        owners = Counter(w.owner for w in first.list_workflows(queue="q"))
    assert led.most["*"] == 3
    assert led.most["A"] <= 2 and led.most["B"] <= 2
    assert len(owners) == 2 and sum(owners.values()) == 40
    assert len(led.started()) == 40


# -- 2. partitions ----------------------------------------------------------------------------


def test_partitions_run_in_order_one_at_a_time_and_alongside_each_other(db_path):
    led = Ledger()
    app, q, job = make_app(db_path, led, concurrency=1, partitioned=True)
    with app:
        # The heads of both partitions meet at a barrier: it only opens if they run at once.
        handles = [q.enqueue(job, "a0", gate="meet", part="a", partition_key="a"),
                   q.enqueue(job, "b0", gate="meet", part="b", partition_key="b")]
        for i in range(1, 8):
            for part in "ab":
                handles.append(q.enqueue(job, f"{part}{i}", part=part, partition_key=part))
        for h in handles:
            h.result(timeout=HOLD)
    assert led.started("a") == [f"a{i}" for i in range(8)]
    assert led.started("b") == [f"b{i}" for i in range(8)]
    assert led.most["a"] == led.most["b"] == 1
    assert led.most["*"] == 2


def test_partition_key_is_required_exactly_on_partitioned_queues(db_path):
    app, q, job = make_app(db_path, Ledger(), concurrency=1, partitioned=True)
    plain = app.queue("plain")
    with app:
        with pytest.raises(ld.UsageError, match="partitioned: every enqueue needs a partition_key"):
            q.enqueue(job, "x")
        with pytest.raises(ld.UsageError, match="not partitioned"):
            plain.enqueue(job, "x", partition_key="a")
        assert app.list_workflows() == []


# -- 3. rate limit ----------------------------------------------------------------------------


def test_rate_limit_is_a_rolling_window_on_the_app_clock(db_path):
    clock = FakeClock()
    t0 = clock.now()
    app = ld.App(db_path, clock=clock)
    q = app.queue("q", rate_limit=(3, 10))

    @app.workflow(name="stamp")
    def stamp(i: int) -> float:
        return ld.now().timestamp()

    with app:
        handles = [q.enqueue(stamp, i) for i in range(10)]

        def done() -> int:
            return sum(h.status() is ld.Status.SUCCEEDED for h in handles)

        for expected in (3, 6, 9, 10):
            eventually(lambda want=expected: done() == want, f"{expected} done")
            if expected < 10:
                clock.advance(9.5)  # the window is still full
                time.sleep(0.05)
                assert done() == expected and stats(app).enqueued == 10 - expected
                clock.advance(0.5)  # it opens now: the timer fires on the fake clock
        starts = [h.result(timeout=HOLD) - t0 for h in handles]
    assert starts == [0.0] * 3 + [10.0] * 3 + [20.0] * 3 + [30.0]
    for s in starts:
        assert sum(s - 10 < other <= s for other in starts) <= 3


# -- 4. order ---------------------------------------------------------------------------------


def test_lower_priority_first_then_enqueue_order(db_path):
    led = Ledger()
    app, q, job = make_app(db_path, led, concurrency=1)
    priorities = [5, 1, 5, 0, 1, -3, 0, 2**40, -1, 0]
    with app:
        blocker = q.enqueue(job, "blocker", gate="go")
        led.running(1)
        handles = [q.enqueue(job, f"p{i}", priority=p) for i, p in enumerate(priorities)]
        led.gates["go"].set()
        for h in [blocker, *handles]:
            h.result(timeout=HOLD)
    expected = [f"p{i}" for i in sorted(range(len(priorities)), key=lambda i: priorities[i])]
    assert led.started() == ["blocker", *expected]


# -- 5. dedup ---------------------------------------------------------------------------------


def test_a_dedup_key_is_held_while_enqueued_or_running_and_frees_when_it_ends(db_path):
    led = Ledger()
    app, q, job = make_app(db_path, led, concurrency=1)
    other = app.queue("other")
    with app:
        blocker = q.enqueue(job, "blocker", gate="go")
        led.running(1)
        held = q.enqueue(job, "held", gate="held", dedup_key="k")
        with pytest.raises(ld.QueueDeduplicatedError, match="dedup key 'k'") as refused:
            q.enqueue(job, "dup", dedup_key="k")
        assert isinstance(refused.value, ld.WorkflowConflictError)
        assert refused.value.existing_id == held.workflow_id
        # The id still makes an enqueue idempotent, and other queues have their own keys.
        assert q.enqueue(job, "held", workflow_id=held.workflow_id, dedup_key="k") == held
        assert other.enqueue(job, "elsewhere", dedup_key="k").result(timeout=HOLD) == "elsewhere"
        led.gates["go"].set()
        blocker.result(timeout=HOLD)
        led.running(1)  # now "held" runs
        assert held.status() is ld.Status.PENDING
        with pytest.raises(ld.QueueDeduplicatedError) as refused:
            q.enqueue(job, "dup", dedup_key="k")
        assert refused.value.existing_id == held.workflow_id
        led.gates["held"].set()
        assert held.result(timeout=HOLD) == "held"
        failing = q.enqueue(job, "fails", gate="fail", dedup_key="k")  # freed by success
        with pytest.raises(ValueError, match="job fails fails"):
            failing.result(timeout=HOLD)
        doomed = q.enqueue(job, "doomed", gate="doomed", dedup_key="k")  # freed by failure
        led.running(1)
        assert app.cancel(doomed.workflow_id) is True
        led.gates["doomed"].set()
        led.running(0)
        last = q.enqueue(job, "last", dedup_key="k")  # freed by cancellation
        assert last.result(timeout=HOLD) == "last"
    assert "dup" not in led.started()


# -- 6. cancel and resume ---------------------------------------------------------------------


def test_a_cancelled_enqueued_workflow_never_runs_and_resume_requeues_it(db_path):
    led = Ledger()
    app, q, job = make_app(db_path, led, concurrency=1)
    with app:
        blocker = q.enqueue(job, "blocker", gate="go")
        led.running(1)
        victim = q.enqueue(job, "victim")
        assert victim.status() is ld.Status.ENQUEUED
        assert app.cancel(victim.workflow_id) is True
        assert victim.status() is ld.Status.CANCELLED
        with pytest.raises(ld.WorkflowCancelledError):
            victim.result(timeout=HOLD)
        after = q.enqueue(job, "after")
        led.gates["go"].set()
        assert after.result(timeout=HOLD) == "after" and blocker.result() == "blocker"
        assert led.started() == ["blocker", "after"]
        # Resumed, it goes back to its queue and waits its turn behind a running job.
        second = q.enqueue(job, "second", gate="go2")
        led.running(1)
        app.resume(victim.workflow_id)
        assert victim.status() is ld.Status.ENQUEUED
        assert stats(app).enqueued == 1
        led.gates["go2"].set()
        assert victim.result(timeout=HOLD) == "victim" and second.result() == "second"
    assert led.started() == ["blocker", "after", "second", "victim"]
    assert led.most["*"] == 1


# -- 7. timeouts ------------------------------------------------------------------------------


def test_a_queued_workflow_timeout_counts_from_its_dequeue(db_path):
    clock, led = FakeClock(), Ledger()
    app, q, job = make_app(db_path, led, clock=clock, concurrency=1)

    @app.workflow(name="timed", timeout=5)
    def timed(seconds: float) -> str:
        ld.sleep(seconds)
        return "done"

    with app:
        blocker = q.enqueue(job, "blocker", gate="go")
        led.running(1)
        quick, slow = q.enqueue(timed, 3), q.enqueue(timed, 20)
        clock.advance(100)  # far past 5 s after the enqueue
        assert quick.status() is ld.Status.ENQUEUED
        led.gates["go"].set()
        blocker.result(timeout=HOLD)
        eventually(lambda: sleeping(app, quick.workflow_id), "the quick one asleep")
        clock.advance(3)  # 3 s after its dequeue: within its 5
        assert quick.result(timeout=HOLD) == "done"
        eventually(lambda: sleeping(app, slow.workflow_id), "the slow one asleep")
        clock.advance(6)  # 6 s after its dequeue
        with pytest.raises(ld.WorkflowTimedOutError, match="a resumed workflow has no deadline"):
            slow.result(timeout=HOLD)
        # As the error says, a resume gives it more time: its next dequeue sets no deadline
        # (it set a fresh 5 s one, so the workflow timed out again 5 s after each resume).
        app.resume(slow.workflow_id)
        eventually(lambda: slow.status() is ld.Status.PENDING, "the resumed one dequeued")
        clock.advance(6)  # past where a fresh 5 s deadline would fall
        time.sleep(0.1)
        clock.advance(10)  # past the end of its sleep
        assert slow.result(timeout=HOLD) == "done"


# -- 8. inside a workflow ---------------------------------------------------------------------


def _parents(path: str, led: Ledger) -> tuple[ld.App, ld.Queue, Any, Any]:
    app, q, job = make_app(path, led)

    @app.workflow(name="parent")
    def parent() -> list[Any]:
        try:
            q.enqueue(job, "dup", dedup_key="k")
            refused = None
        except ld.QueueDeduplicatedError as exc:
            refused = exc.existing_id
        child = q.enqueue(job, "kid")
        job("parent-gate", gate="parent")  # an inline child run: the parent waits here
        won = ld.select([child, ld.after(3600)])
        return [refused, type(child).__name__, won is child, child.result()]

    return app, q, job, parent


def test_a_queued_child_is_enqueued_once_and_a_refusal_is_replayed(db_path):
    led = Ledger()
    app, q, job, parent = _parents(db_path, led)
    with app:
        # Installed first: a step reads the crash hook when it starts. p/2 is the parent's
        # third child: the inline run of job "parent-gate".
        switch = crash_at(app, "after_body", when=lambda info: info.get("workflow_id") == "p/2")
        holder = q.enqueue(job, "holder", gate="holder", dedup_key="k")
        led.running(1)
        app.start(parent, workflow_id="p")
        eventually(lambda: "parent-gate" in led.started(), "the parent at its gate")
        led.gates["holder"].set()  # the key is free from here on
        holder.result(timeout=HOLD)
        kids = [w for w in app.list_workflows(queue="q") if w.parent_id == "p"]
        assert len(kids) == 1
        kid = app.handle(kids[0].workflow_id)
        assert kid.result(timeout=HOLD) == "kid"
        led.gates["parent"].set()
        assert switch.wait(HOLD)
    app, q, job, parent = _parents(db_path, led)
    with app:
        result = app.handle("p").result(timeout=HOLD)
        queued = app.list_workflows(queue="q")
    assert result == [holder.workflow_id, "ChildHandle", True, "kid"]
    assert sorted(w.workflow_id for w in queued) == sorted([holder.workflow_id, kid.workflow_id])
    assert Counter(led.started()) == {"holder": 1, "kid": 1, "parent-gate": 2}


def test_cancelling_the_parent_cancels_its_enqueued_child(db_path):
    led = Ledger()
    app, q, job = make_app(db_path, led, concurrency=1)

    @app.workflow(name="waiter")
    def waiter() -> str:
        return q.enqueue(job, "kid").result()

    with app:
        blocker = q.enqueue(job, "blocker", gate="go")
        led.running(1)
        parent = app.start(waiter)
        eventually(lambda: [w for w in app.list_workflows(queue="q") if w.parent_id], "a kid")
        kid = next(w for w in app.list_workflows(queue="q") if w.parent_id)
        assert kid.status is ld.Status.ENQUEUED
        assert parent.cancel() is True
        assert app.handle(kid.workflow_id).status() is ld.Status.CANCELLED
        follower = q.enqueue(job, "follower")
        led.gates["go"].set()
        assert follower.result(timeout=HOLD) == "follower" and blocker.result() == "blocker"
    assert led.started() == ["blocker", "follower"]


# -- 9. bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(("limits", "error", "says"), [
    ({"concurrency": 0}, ValueError, "concurrency must be an int >= 1"),
    ({"concurrency": -1}, ValueError, "concurrency must be an int >= 1"),
    ({"concurrency": 1.5}, ValueError, "concurrency must be an int >= 1"),
    ({"concurrency": True}, ValueError, "concurrency must be an int >= 1"),
    ({"worker_concurrency": 0}, ValueError, "worker_concurrency must be an int >= 1"),
    ({"rate_limit": (0, 1)}, ValueError, "rate_limit's n must be an int >= 1"),
    ({"rate_limit": (1, 0)}, ValueError, "per_seconds must be a finite number > 0"),
    ({"rate_limit": (1, -1)}, ValueError, "per_seconds must be a finite number > 0"),
    ({"rate_limit": (1, math.nan)}, ValueError, "per_seconds must be a finite number > 0"),
    ({"rate_limit": (1, math.inf)}, ValueError, "per_seconds must be a finite number > 0"),
    ({"rate_limit": "x"}, ValueError, r"rate_limit takes \(n, per_seconds\)"),
    ({"rate_limit": (1, 2, 3)}, ValueError, r"rate_limit takes \(n, per_seconds\)"),
    ({"partitioned": "yes"}, ld.UsageError, "partitioned= takes True or False"),
])
def test_bad_queue_limits_are_refused_by_name(db_path, limits, error, says):
    app = ld.App(db_path)
    with pytest.raises(error, match=says):
        app.queue("q", **limits)


@pytest.mark.parametrize(("name", "error", "says"), [
    ("", ld.InvalidIdError, "queue name '' is empty"),
    ("a\0b", ld.InvalidIdError, "queue name .* contains a NUL"),
    (5, ld.UsageError, "a queue name is a non-empty str, not int"),
    (None, ld.UsageError, "a queue name is a non-empty str, not NoneType"),
])
def test_bad_queue_names_are_refused_by_name(db_path, name, error, says):
    with pytest.raises(error, match=says):
        ld.App(db_path).queue(name)


def test_bad_enqueues_are_refused_and_write_nothing(db_path):
    app, q, job = make_app(db_path, Ledger(), concurrency=2)
    assert app.queue("q", concurrency=2).name == "q"  # the same declaration again: fine
    with pytest.raises(ld.UsageError, match="already declared on this App"):
        app.queue("q", concurrency=3)
    with pytest.raises(ld.AppClosedError, match="not launched"):
        q.enqueue(job, "x")

    def plain(key: str) -> str:
        return key

    with app:
        for priority in ("1", True, 1.5, None, 2**63):
            with pytest.raises(ValueError, match="priority must be an int"):
                q.enqueue(job, "x", priority=priority)
        for key in ("", 5, "a\0b"):
            with pytest.raises(ld.UsageError, match="dedup_key must be a non-empty str"):
                q.enqueue(job, "x", dedup_key=key)
        with pytest.raises(ld.UsageError, match="is not a workflow"):
            q.enqueue(plain, "x")
        stranger = ld.App(db_path).queue("q", concurrency=2)
        with pytest.raises(ld.UsageError, match="'job' is registered on another App"):
            stranger.enqueue(job, "x")
        assert app.list_workflows() == []


# -- 10, 11. tools and gc ---------------------------------------------------------------------


def test_tools_show_the_queue_and_an_enqueued_result_waits_and_gc_keeps_it(db_path):
    led = Ledger()
    app, q, job = make_app(db_path, led, concurrency=1)
    with app:
        blocker = q.enqueue(job, "blocker", gate="go")
        led.running(1)
        waiting = [q.enqueue(job, f"w{i}") for i in range(2)]
        finished = app.start(job, "outside")
        assert finished.result(timeout=HOLD) == "outside"
        info = stats(app)
        assert (info.enqueued, info.running, info.concurrency) == (2, 1, 1)
        assert info.oldest_enqueued_at is not None
        on_queue = {w.workflow_id: w.status for w in app.list_workflows(queue="q")}
        assert on_queue == {blocker.workflow_id: ld.Status.PENDING,
                            **{h.workflow_id: ld.Status.ENQUEUED for h in waiting}}
        with pytest.raises(ld.WaitTimeoutError, match="still enqueued"):
            waiting[0].result(timeout=0.2)
        assert app.gc(0) == 1  # the finished outside job; enqueued and running ones stay
        assert all(h.status() is ld.Status.ENQUEUED for h in waiting)
        led.gates["go"].set()
        assert [h.result(timeout=HOLD) for h in waiting] == ["w0", "w1"]
        info = stats(app)
        assert (info.enqueued, info.running) == (0, 0)
    assert led.started() == ["blocker", "outside", "w0", "w1"]


# -- 12. recovery -----------------------------------------------------------------------------


def _recovering(path: str, led: Ledger, runs: Counter[str]) -> tuple[ld.App, ld.Queue, Any]:
    app = ld.App(path)
    q = app.queue("q", concurrency=2)

    @app.step(name="first")
    def first(key: str) -> None:
        runs[f"first-{key}"] += 1

    @app.step(name="held")
    def held(key: str) -> None:
        runs[f"held-{key}"] += 1
        led.enter("R", key)
        try:
            assert led.gates[key].wait(HOLD)
        finally:
            led.leave("R")

    @app.step(name="last")
    def last(key: str) -> str:
        runs[f"last-{key}"] += 1
        return key

    @app.workflow(name="job")
    def job(key: str) -> str:
        first(key)
        held(key)
        return last(key)

    return app, q, job


def test_queued_workflows_of_a_crashed_app_are_recovered_once_within_the_limit(db_path):
    led, runs = Ledger(), Counter[str]()
    app, q, job = _recovering(db_path, led, runs)
    keys = [f"j{i}" for i in range(6)]
    ids = [f"w-{key}" for key in keys]
    switch = crash_at(app, "after_body", when=lambda info: info.get("workflow_id") == ids[0]
                      and info.get("name") == "held")
    with app:
        for key, wid in zip(keys, ids, strict=True):
            q.enqueue(job, key, workflow_id=wid)
        led.running(2)
        led.gates["j0"].set()  # j0's held step returns, and the App dies before recording it
        assert switch.wait(HOLD)
        led.gates["j1"].set()  # j1's held step returns into a dead App: not recorded either
        led.running(0)
    assert sorted(led.started()) == ["j0", "j1"]
    for key in keys[2:]:
        led.gates[key].set()
    app, q, job = _recovering(db_path, led, runs)
    with app:
        assert [app.handle(w).result(timeout=HOLD) for w in ids] == keys
        assert all(w.status is ld.Status.SUCCEEDED for w in app.list_workflows(queue="q"))
    assert led.most["*"] == 2
    assert {k: runs[f"first-{k}"] for k in keys} == dict.fromkeys(keys, 1)
    assert {k: runs[f"held-{k}"] for k in keys} == {"j0": 2, "j1": 2, **dict.fromkeys(keys[2:], 1)}
    assert {k: runs[f"last-{k}"] for k in keys} == dict.fromkeys(keys, 1)
    assert sorted(led.started()[2:4]) == ["j0", "j1"]  # recovered first: nothing passed them


def test_recovery_keeps_the_worker_limit(db_path):
    led = Ledger()
    app, q, job = make_app(db_path, led, "A", worker_concurrency=2)
    switch = crash_at(app, "after_body", when=lambda info: info.get("workflow_id") == "w0")
    with app:
        for i in range(2):
            q.enqueue(job, f"k{i}", gate=f"g{i}", workflow_id=f"w{i}")
        led.running(2)
        led.gates["g0"].set()
        assert switch.wait(HOLD)
        led.gates["g1"].set()
        led.running(0)
    for gate in ("g0", "g1"):
        led.gates[gate].clear()
    app, q, job = make_app(db_path, led, "B", worker_concurrency=1)
    with app:
        # Recovery puts the dead App's queued workflows back in their queue: B dequeues one
        # (its worker limit), and the other waits, enqueued, at its old place.
        eventually(lambda: led.active["B"] == 1, "one recovered job running")
        statuses = sorted(app.handle(w).status() for w in ("w0", "w1"))
        assert statuses == [ld.Status.ENQUEUED, ld.Status.PENDING]
        for gate in ("g0", "g1"):
            led.gates[gate].set()
        for wid in ("w0", "w1"):
            app.handle(wid).result(timeout=HOLD)
    assert led.most["B"] == 1


def test_a_producer_only_app_enqueues_and_never_dequeues(db_path):
    """``consume=False``: a web process enqueues, the workers run everything."""
    producer, worker = ld.App(db_path), ld.App(db_path)
    ran_by: list[str] = []

    @producer.workflow(name="job")
    def job_p(n: int) -> int:
        ran_by.append("producer")
        return n

    @worker.workflow(name="job")
    def job_w(n: int) -> int:
        ran_by.append("worker")
        return n

    queue = producer.queue("jobs", concurrency=2, consume=False)
    worker.queue("jobs", concurrency=2)
    with producer:
        handles = [queue.enqueue(job_p, n) for n in range(10)]
        assert {h.status() for h in handles} == {ld.Status.ENQUEUED}  # nobody consumes yet
        with worker:
            assert [h.result(timeout=10) for h in handles] == list(range(10))
    assert ran_by == ["worker"] * 10
    with pytest.raises(ld.UsageError, match="consume= takes True or False"):
        producer.queue("jobs", consume="no")  # type: ignore[arg-type]


@pytest.mark.parametrize(("declare", "enqueue"), [
    ({"concurrency": 0}, None),
    ({"rate_limit": (1, 0)}, None),
    ({"partitioned": True, "concurrency": 1}, {}),
    ({}, {"partition_key": "a"}),
    ({}, {"priority": "high"}),
])
def test_a_bad_queue_argument_is_a_usage_error_and_a_value_error(db_path, declare, enqueue):
    """Callers check bad arguments with either class (DBOS users: ValueError)."""
    app = ld.App(db_path)

    @app.workflow()
    def job() -> None:
        return None

    with app:
        with pytest.raises(ld.QueueArgumentError) as caught:
            queue = app.queue("q", **declare)
            queue.enqueue(job, **enqueue)
        assert app.list_workflows() == []
    assert isinstance(caught.value, ld.UsageError) and isinstance(caught.value, ValueError)
