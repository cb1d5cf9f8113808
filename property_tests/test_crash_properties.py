"""D1/D2 over generated workflow programs and crash points.

A program is a list of operations (inline steps, failing steps retried to success, ``go`` groups
joined by ``select`` + ``wait_all`` or by ``as_completed``, durable timers). Its result does not
depend on which branch wins a race, so a crash-free run and a crashed-then-recovered run must
end with the same value and the same journal shape (D1), and no step body may start after its
completion was committed (D2). A negative control runs the same check against an engine whose
step commits are acknowledged but not written, and must see it fail. The property runs on
SQLite and (fewer examples) on PostgreSQL; the negative control's defect is SQLite's storage.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from journals import Journals, fewer_examples, sqlite_journals
from support import inspect_journal

import litedurable as ld
from litedurable.testing import CRASH_POINTS, FakeClock, crash_at

Op = tuple[str, int]

ops = st.lists(
    st.one_of(
        st.tuples(st.just("step"), st.integers(0, 9)),
        st.tuples(st.just("flaky"), st.integers(1, 2)),
        st.tuples(st.just("race"), st.integers(1, 4)),
        st.tuples(st.just("stream"), st.integers(1, 3)),
        st.tuples(st.just("timer"), st.integers(0, 1)),
    ),
    min_size=1,
    max_size=6,
)
crashes = st.tuples(st.sampled_from(CRASH_POINTS[:-1]), st.integers(1, 4))


def build(path: str, program: list[Op], defects: tuple[str, ...] = ()) -> tuple[ld.App, Any]:
    app = ld.App(path, clock=FakeClock(), workers=2, suspend_after=0.5)
    app.faults.inject(*defects)
    failures: dict[str, int] = {}
    lock = threading.Lock()

    @app.step()
    def value(x: int) -> int:
        return x * 3 + 1

    @app.step(retries=ld.Retry(max_attempts=3, initial=0.0))
    def flaky(times: int) -> int:
        key = ld.idempotency_key()
        with lock:
            failures[key] = failures.get(key, 0) + 1
            if failures[key] <= times:
                raise ConnectionError(f"transient failure {failures[key]}")
        return times

    @app.workflow(name="program")
    def run_program(program: list[tuple[str, int]]) -> int:
        total = 0
        for kind, n in program:
            if kind == "step":
                total += value(n)
            elif kind == "flaky":
                total += flaky(n)
            elif kind == "race":
                futures = [ld.go(value, i) for i in range(n)]
                ld.select([*futures, ld.after(3600)])
                total += sum(ld.wait_all(futures))
            elif kind == "stream":
                total += sum(f.result() for f in ld.as_completed(
                    [ld.go(value, i) for i in range(n)]))
            else:  # durable timers that are due at once, so no clock needs to move
                ld.sleep(0)
                ld.select([ld.after(0), ld.after(3600)])
                total += n
        return total

    return app, run_program


def run_once(path: str, program: list[Op], crash: tuple[str, int] | None,
             defects: tuple[str, ...] = ()) -> dict[str, Any]:
    committed: set[tuple[object, object]] = set()
    problems: list[str] = []

    def watch(at: str, info: Mapping[str, object]) -> None:
        key = (info.get("workflow_id"), info.get("step"))
        if at == "before_step" and key in committed:
            problems.append(f"D2: step {key[1]} started after its completion was committed")
        if at == "after_commit":
            committed.add(key)

    app, wf = build(path, program, defects)
    if crash is None:
        app.faults.callback = watch
    else:
        switch = crash_at(app, crash[0], nth=crash[1], observer=watch)
    with app:
        handle = app.start(wf, program, workflow_id="prop")
        if crash is None:
            handle.result(30)
        else:
            while not switch.fired.is_set() and handle.status() == ld.Status.PENDING:
                switch.fired.wait(0.005)
            if not switch.fired.is_set():
                result = handle.result(30)
    if crash is not None:
        app, wf = build(path, program, defects)
        app.faults.callback = watch
        with app:
            result = app.handle("prop").result(30)
            shape = [(s.step, s.kind, s.name) for s in app.steps("prop")]
    else:
        with app:
            result = app.handle("prop").result(30)
            shape = [(s.step, s.kind, s.name) for s in app.steps("prop")]
    with inspect_journal(path) as journal:  # the database's own check, then every checksum
        integrity = "; ".join(journal.check()) or "ok"
    return {"result": result, "shape": shape, "problems": problems, "integrity": integrity}


def check(program: list[Op], crash: tuple[str, int], defects: tuple[str, ...] = (),
          journals: Journals = sqlite_journals) -> list[str]:
    with journals() as make:
        reference = run_once(make("ref"), program, None, defects)
        crashed = run_once(make("crash"), program, crash, defects)
    problems = reference["problems"] + crashed["problems"]
    if crashed["result"] != reference["result"]:
        problems.append(f"D1: result {crashed['result']} != crash-free {reference['result']}")
    if crashed["shape"] != reference["shape"]:
        problems.append(f"D1: journal {crashed['shape']} != crash-free {reference['shape']}")
    if crashed["integrity"] != "ok":
        problems.append(f"G1: the journal's check says {crashed['integrity']}")
    return problems


@given(program=ops, crash=crashes)
def test_crash_anywhere_recovers_to_the_crash_free_outcome(
    program: list[Op], crash: tuple[str, int]
) -> None:
    assert check(program, crash) == []


@fewer_examples
@given(program=ops, crash=crashes)
def test_crash_anywhere_recovers_to_the_crash_free_outcome_on_postgres(
    pg_journals: Journals, program: list[Op], crash: tuple[str, int]
) -> None:
    assert check(program, crash, journals=pg_journals) == []


def test_negative_control_lost_step_commits_are_caught() -> None:
    """An engine that acknowledges step rows without writing them must fail the check."""
    problems = check([("step", 1), ("step", 2), ("step", 3)], ("after_commit", 2),
                     defects=("lost_step_rows",))
    assert any(p.startswith("D2") for p in problems), problems


def test_negative_control_lost_step_commits_are_caught_on_postgres(
    pg_journals: Journals, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same control on PostgreSQL: its storage has no injected defects, so the broken
    variant is made here, a ``record_step`` that acknowledges step rows without writing them
    (as ``lost_step_rows`` does on SQLite)."""
    from litedurable._postgres import PostgresStorage
    from litedurable._storage import StepRow

    def lossy(self: PostgresStorage, row: StepRow, owner: str) -> None:
        if row.kind != "step":
            real(self, row, owner)

    real = PostgresStorage.record_step
    monkeypatch.setattr(PostgresStorage, "record_step", lossy)
    problems = check([("step", 1), ("step", 2), ("step", 3)], ("after_commit", 2),
                     journals=pg_journals)
    assert any(p.startswith("D2") for p in problems), problems
