"""Queues attacked as a new user would use them (README "Queues", DESIGN.md 1c): regression
tests for the defects that attack found.
"""

from __future__ import annotations

import threading

import pytest

import litedurable as ld

pytestmark = pytest.mark.both_backends  # each test runs on SQLite and on PostgreSQL


class _CloseOnClear(threading.Event):
    """An Event whose first ``clear()`` runs ``close`` first: another thread's ``close()``
    landing between serve()'s launch and its clear of the stop flag."""

    def __init__(self, close: object) -> None:
        super().__init__()
        self.close = close
        self.fired = False

    def clear(self) -> None:
        if not self.fired:
            self.fired = True
            closer = threading.Thread(target=self.close)  # type: ignore[arg-type]
            closer.start()
            closer.join()
        super().clear()


def test_serve_returns_when_closed_from_another_thread_as_it_starts(db_path: str) -> None:
    # close() sets the flag serve() waits on; a close just before serve() cleared that flag
    # was lost, and serve() then waited forever on a closed App (a non-daemon worker thread
    # that never ends keeps the process alive).
    app = ld.App(db_path)
    app.queue("q", concurrency=1)
    app.launch()
    app._serving = _CloseOnClear(app.close)
    server = threading.Thread(target=app.serve, daemon=True)
    server.start()
    server.join(10)  # a hang guard, not a timing assertion
    alive = server.is_alive()
    if alive:
        app._serving.set()
        server.join(30)
    assert app._serving.fired
    assert not alive, "serve() kept waiting on an App closed by another thread"


def test_an_out_of_range_priority_is_refused_with_its_range(db_path: str) -> None:
    # The message said "priority must be an int" for an int too large to store.
    app = ld.App(db_path)
    q = app.queue("q")

    @app.workflow()
    def job() -> int:
        return 1

    with app:
        for bad in (2**70, -(2**63), 1.5, True):
            with pytest.raises(ValueError, match=r"from -2\*\*62 to 2\*\*62"):
                q.enqueue(job, priority=bad)
        assert app.list_workflows() == []
        assert q.enqueue(job, priority=2**62).result(timeout=30) == 1


def test_a_workflow_parameter_named_like_an_enqueue_keyword_is_refused(db_path: str) -> None:
    # q.enqueue(alert, "disk full", priority=5) took priority=5 as the queue priority: the
    # workflow silently ran with its default priority 0 (or failed with a missing argument).
    app = ld.App(db_path)
    q = app.queue("q")

    @app.workflow()
    def alert(message: str, priority: int = 0) -> str:
        return f"{message} at {priority}"

    @app.workflow()
    def keyed(message: str, *, dedup_key: str) -> str:
        return message + dedup_key

    @app.workflow()
    def fine(message: str, priority_: int = 0) -> str:
        return f"{message} at {priority_}"

    with app:
        with pytest.raises(ld.UsageError, match=r"parameter named 'priority'.*rename"):
            q.enqueue(alert, "disk full", priority=5)
        with pytest.raises(ld.UsageError, match=r"parameter named 'dedup_key'"):
            q.enqueue(keyed, "x", dedup_key="y")
        assert app.list_workflows() == []  # nothing enqueued
        assert app.run(alert, "disk full", 5) == "disk full at 5"  # app.start is unaffected
        assert q.enqueue(fine, "disk full", priority_=5, priority=1).result(timeout=30) == (
            "disk full at 5")


@pytest.mark.xfail(strict=True, reason=(
    "a cancel frees the queue slot at once, while the cancelled workflow's running step body "
    "goes on until it returns; a consumer woken by the cancel's commit starts the next one"))
def test_a_cancelled_workflows_running_step_still_holds_its_slot(db_path: str) -> None:
    app = ld.App(db_path)
    other = ld.App(db_path)  # the canceller: another process's commit wakes the consumer
    q = app.queue("q", concurrency=1)
    lock = threading.Lock()
    active, most = [0], [0]
    entered = {1: threading.Event(), 2: threading.Event()}
    release = threading.Event()

    @app.workflow()
    def encode(i: int) -> int:
        def body() -> int:
            with lock:
                active[0] += 1
                most[0] = max(most[0], active[0])
            entered[i].set()
            release.wait(30)  # a step that does not poll ld.cancelled()
            with lock:
                active[0] -= 1
            return i

        return ld.run(body)

    with app, other:
        a = q.enqueue(encode, 1)
        assert entered[1].wait(30)
        b = q.enqueue(encode, 2)
        other.cancel(a.workflow_id)
        entered[2].wait(10)  # started at once if the slot was freed (a bound, not an assertion)
        release.set()
        assert b.result(timeout=30) == 2
    assert most[0] == 1, f"{most[0]} step bodies ran at once in a queue of concurrency 1"


def test_waiting_on_an_enqueued_workflow_says_it_waits_in_its_queue(db_path: str) -> None:
    # The timeout said "it keeps running" of a workflow that never started.
    app = ld.App(db_path)
    q = app.queue("q", consume=False)  # nothing here takes it

    @app.workflow()
    def job() -> int:
        return 1

    with app:
        handle = q.enqueue(job)
        with pytest.raises(ld.WaitTimeoutError, match=r"still enqueued .* stays in its queue"):
            handle.result(timeout=0.05)
        assert handle.status() == ld.Status.ENQUEUED
