"""D5, D6, D8, D9 over generated inputs (RELIABILITY.md).

* D5: any number of ``start(id)`` calls, from racing threads, over a small pool of ids, make
  exactly one workflow per id, and each body runs once.
* D6: with pool sizes 1, 2 and 4 a generated fan-out program completes, and no thread leaks.
* D8: a program changed before its crash point (a step renamed, removed, inserted, or two
  swapped) is caught on resume: the workflow ends ``nondeterministic``, never silently.
* D9: a workflow that crashes its process at every attempt ends ``exhausted`` after a bounded
  number of recoveries; a non-serializable output fails the workflow once without re-running
  the body.

D5, D6, D8 and D9's bound also run on PostgreSQL (``..._on_postgres``, fewer examples).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from journals import Journals, fewer_examples, sqlite_journals
from support import crash_then_close, engine_threads, leaked_engine_threads, stored_status

import litedurable as ld
from litedurable.testing import FakeClock, crash_at

# -- D5 ---------------------------------------------------------------------------------------


RACING_STARTS = (st.lists(st.integers(0, 2), min_size=1, max_size=12), st.integers(1, 4))


@given(*RACING_STARTS)
def test_racing_starts_make_one_workflow_per_id(picks: list[int], threads: int) -> None:
    """D5: racing ``start(id)`` calls make one workflow per id, and each body runs once."""
    racing_starts(picks, threads, sqlite_journals)


@fewer_examples
@given(*RACING_STARTS)
def test_racing_starts_make_one_workflow_per_id_on_postgres(
    pg_journals: Journals, picks: list[int], threads: int
) -> None:
    racing_starts(picks, threads, pg_journals)


def racing_starts(picks: list[int], threads: int, journals: Journals) -> None:
    runs: Counter[str] = Counter()
    lock = threading.Lock()
    with journals() as make:
        app = ld.App(make("j"), clock=FakeClock())

        @app.step(name="body")
        def body(tag: str) -> str:
            with lock:
                runs[ld.workflow_id()] += 1
            return tag

        @app.workflow(name="wf")
        def wf(tag: str) -> str:
            return body(tag)

        barrier = threading.Barrier(threads)
        handles: list[ld.Handle[str]] = []

        def starter(mine: list[int]) -> None:
            barrier.wait(30)
            for pick in mine:
                handle = app.start(wf, f"tag-{pick}", workflow_id=f"id-{pick}")
                with lock:
                    handles.append(handle)

        with app:
            workers = [threading.Thread(target=starter, args=(picks[i::threads],))
                       for i in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join(60)
            for handle in handles:
                assert handle.result(timeout=30) == f"tag-{handle.workflow_id[3:]}"
            ids = sorted(w.workflow_id for w in app.list_workflows())
    assert ids == sorted({f"id-{p}" for p in picks})
    assert runs == dict.fromkeys(ids, 1)


# -- D6 ---------------------------------------------------------------------------------------


POOLS = (st.sampled_from([1, 2, 4]), st.sampled_from([1, 2, 4]),
         st.lists(st.integers(1, 5), min_size=1, max_size=4))


@given(*POOLS)
def test_every_pool_size_completes_without_leaking_threads(
    workers: int, workflow_threads: int, fan_outs: list[int]
) -> None:
    """D6: with pool sizes 1, 2 and 4 a fan-out program completes, and no thread leaks."""
    pool_sizes(workers, workflow_threads, fan_outs, sqlite_journals)


@fewer_examples
@given(*POOLS)
def test_every_pool_size_completes_without_leaking_threads_on_postgres(
    pg_journals: Journals, workers: int, workflow_threads: int, fan_outs: list[int]
) -> None:
    pool_sizes(workers, workflow_threads, fan_outs, pg_journals)


def pool_sizes(workers: int, workflow_threads: int, fan_outs: list[int],
               journals: Journals) -> None:
    before = engine_threads()
    with journals() as make:
        app = ld.App(make("j"), clock=FakeClock(), workers=workers,
                     workflow_threads=workflow_threads, suspend_after=0.05)

        @app.step(name="square")
        def square(x: int) -> int:
            return x * x

        @app.workflow(name="fan")
        def fan(width: int) -> int:
            futures = [ld.go(square, i) for i in range(width)]
            first = ld.select(futures)
            return first.result() * 0 + sum(ld.wait_all(futures))

        with app:
            handles = [app.start(fan, width) for width in fan_outs]  # more runs than threads
            results = [h.result(timeout=60) for h in handles]
    assert results == [sum(i * i for i in range(w)) for w in fan_outs]
    assert leaked_engine_threads(before) == []


# -- D8 ---------------------------------------------------------------------------------------

MUTATIONS = ("rename", "remove", "insert", "swap")


def program_app(path: str, names: list[str]) -> tuple[ld.App, Any]:
    app = ld.App(path, clock=FakeClock(), app_version="fixed")  # versions must not hide change

    def make(name: str) -> Any:
        return app.step(name=name)(lambda: name)

    steps = {name: make(name) for name in dict.fromkeys(names)}

    @app.workflow(name="program")
    def program() -> list[str]:
        return [steps[name]() for name in names]

    return app, program


@given(st.integers(3, 6), st.data())
def test_a_program_changed_before_its_crash_point_is_caught(length: int, data: Any) -> None:
    """D8: a step renamed, removed, inserted or swapped before the crash point ends the
    resumed workflow ``nondeterministic``, never silently."""
    changed_program(length, data, sqlite_journals)


@fewer_examples
@given(st.integers(3, 6), st.data())
def test_a_program_changed_before_its_crash_point_is_caught_on_postgres(
    pg_journals: Journals, length: int, data: Any
) -> None:
    changed_program(length, data, pg_journals)


def changed_program(length: int, data: Any, journals: Journals) -> None:
    names = [f"s{i}" for i in range(length)]
    crash_after = data.draw(st.integers(2, length - 1), label="crash after step commit #")
    where = data.draw(st.integers(0, crash_after - 1), label="mutated step")
    mutation = data.draw(st.sampled_from(MUTATIONS), label="mutation")
    changed = list(names)
    if mutation == "rename":
        changed[where] = f"renamed-{where}"
    elif mutation == "remove":
        del changed[where]
    elif mutation == "insert":
        changed.insert(where, "inserted")
    else:  # swap with the next step (which exists: where < crash_after <= length - 1)
        changed[where], changed[where + 1] = changed[where + 1], changed[where]
    with journals() as make:
        path = make("j")
        app, program = program_app(path, names)
        switch = crash_at(app, "after_commit", nth=crash_after)
        crash_then_close(app, switch, lambda a: a.start(program, workflow_id="p"))
        app, _ = program_app(path, changed)
        with app:
            try:
                app.handle("p").result(timeout=30)
            except ld.NonDeterminismError as exc:
                assert "'p'" in str(exc)
            status = app.handle("p").status()
    assert status is ld.Status.NONDETERMINISTIC, (mutation, where, crash_after)


# -- D9 ---------------------------------------------------------------------------------------


@given(st.integers(1, 3))
def test_a_workflow_crashing_every_attempt_ends_exhausted(limit: int) -> None:
    """D9: recovery is bounded; after ``limit`` recoveries the workflow is parked ``exhausted``."""
    crashing_every_attempt(limit, sqlite_journals)


@given(st.integers(1, 3))  # three examples: as many as on SQLite
def test_a_workflow_crashing_every_attempt_ends_exhausted_on_postgres(
    pg_journals: Journals, limit: int
) -> None:
    crashing_every_attempt(limit, pg_journals)


def crashing_every_attempt(limit: int, journals: Journals) -> None:
    with journals() as make:
        path = make("j")
        launches = 0
        while True:
            launches += 1
            assert launches <= limit + 3, "recovery is not bounded"
            app = ld.App(path, clock=FakeClock(), app_version="v", max_recovery_attempts=limit)

            @app.step(name="poison")
            def poison() -> None: ...

            @app.workflow(name="doomed")
            def doomed() -> None:
                poison()

            switch = crash_at(app, "before_step")
            with app:
                if launches == 1:
                    app.start(doomed, workflow_id="d")
                # launch() either parked the workflow or resumed it into the crash
                status = stored_status(path, "d")
                if status != "pending":
                    break
                assert switch.wait(30)
    assert status == "exhausted"
    assert launches == limit + 2  # the first run, `limit` recoveries, then the parking launch


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_non_serializable_output_fails_once_without_rerunning_the_body(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """D9: an output that cannot be stored fails the workflow once; the body is not re-run."""
    runs: Counter[str] = Counter()
    journals: Journals = (sqlite_journals if backend == "sqlite"
                          else request.getfixturevalue("pg_journals"))
    with journals() as make:
        path = make("j")

        def build() -> tuple[ld.App, Any]:
            app = ld.App(path, clock=FakeClock(), app_version="v")

            @app.step(name="opaque")
            def opaque() -> object:
                runs["opaque"] += 1
                return threading.Lock()

            @app.workflow(name="wf")
            def wf() -> object:
                return opaque()

            return app, wf

        app, wf = build()
        with app:
            handle = app.start(wf, workflow_id="w")
            try:
                handle.result(timeout=30)
                raise AssertionError("a lock was stored")
            except ld.SerializationError as exc:
                assert "opaque" in str(exc)
        app, _ = build()
        with app:
            assert app.handle("w").status() is ld.Status.FAILED
    assert runs == {"opaque": 1}
