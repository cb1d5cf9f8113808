"""Crash recovery: named crash points in process, changed code, the recovery limit, real
SIGKILLs, two processes recovering one file, and ``testing.crash_test`` with a negative control.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from support import child_env, crash_then_close, engine_thread_names, eventually, stored_status

import litedurable as ld
from litedurable._app import replay_check
from litedurable._backends import open_storage
from litedurable.testing import (
    CRASH_POINTS,
    CrashTestError,
    FakeClock,
    crash_at,
    crash_schedules,
    crash_test,
)

pytestmark = pytest.mark.both_backends  # each test runs on SQLite and on PostgreSQL

# -- crash points ---------------------------------------------------------------------------


def _build_abc(path: str, counts: Counter[str]) -> tuple[ld.App, object]:
    app = ld.App(path, app_version="v1")

    @app.step(name="a")
    def a(x: int) -> int:
        counts["a"] += 1
        return x + 1

    @app.step(name="b")
    def b(x: int) -> int:
        counts["b"] += 1
        return x * 10

    @app.step(name="c")
    def c(x: int) -> int:
        counts["c"] += 1
        return x - 3

    @app.workflow(name="abc")
    def abc(x: int) -> int:
        return c(b(a(x)))

    return app, abc


@pytest.mark.parametrize(
    ("point", "nth", "after_crash", "after_recovery"),
    [
        ("before_step", 2, {"a": 1}, {"a": 1, "b": 1, "c": 1}),
        ("after_body", 2, {"a": 1, "b": 1}, {"a": 1, "b": 2, "c": 1}),  # at-least-once
        ("after_commit", 2, {"a": 1, "b": 1}, {"a": 1, "b": 1, "c": 1}),
        ("before_outcome", 1, {"a": 1, "b": 1, "c": 1}, {"a": 1, "b": 1, "c": 1}),
    ],
)
def test_crash_point_then_recover(db_path, point, nth, after_crash, after_recovery):
    counts: Counter[str] = Counter()
    app, abc = _build_abc(db_path, counts)
    switch = crash_at(app, point, nth=nth)
    crash_then_close(app, switch, lambda a: a.start(abc, 4, workflow_id="w"))
    assert counts == after_crash
    assert stored_status(db_path, "w") == "pending"

    app, abc = _build_abc(db_path, counts)
    with app:
        assert app.handle("w").result(timeout=30) == 47
        assert [(s.step, s.name) for s in app.steps("w")] == [(0, "a"), (1, "b"), (2, "c")]
        assert app.handle("w").status() is ld.Status.SUCCEEDED
    assert counts == after_recovery


def test_crash_after_outcome_keeps_the_outcome(db_path):
    counts: Counter[str] = Counter()
    app, abc = _build_abc(db_path, counts)
    switch = crash_at(app, "after_outcome")
    crash_then_close(app, switch, lambda a: a.start(abc, 4, workflow_id="w"))
    assert stored_status(db_path, "w") == "succeeded"
    app, abc = _build_abc(db_path, counts)
    with app:
        assert app.handle("w").result(timeout=30) == 47
    assert counts == {"a": 1, "b": 1, "c": 1}


def test_repeated_crashes_never_rerun_a_committed_step(db_path):
    """Crash after each step's commit in turn: every body runs exactly once overall."""
    counts: Counter[str] = Counter()
    for nth in (1, 2, 3):
        app, abc = _build_abc(db_path, counts)
        # each relaunch replays the committed steps; crash after the next new commit
        switch = crash_at(app, "after_commit", nth=1)
        if nth == 1:
            crash_then_close(app, switch, lambda a, wf=abc: a.start(wf, 4, workflow_id="w"))
        else:
            crash_then_close(app, switch)
        assert counts == dict(zip("abc", [1] * nth, strict=False))
    app, abc = _build_abc(db_path, counts)
    with app:
        assert app.handle("w").result(timeout=30) == 47
    assert counts == {"a": 1, "b": 1, "c": 1}


# -- changed code ---------------------------------------------------------------------------

ORIGINAL = ("a", "b", "c")


def _build_sequence(path: str, order: tuple[str, ...], counts: Counter[str]):
    app = ld.App(path, app_version="v1")  # same version: the changed code claims the workflow
    steps = {}
    for name in ("a", "b", "b2", "c", "x"):

        def body(name: str = name) -> str:
            counts[name] += 1
            return name

        steps[name] = app.step(name=name)(body)

    @app.workflow(name="seq")
    def seq() -> list[str]:
        return [steps[name]() for name in order]

    return app, seq


@pytest.mark.parametrize(
    ("changed", "bad_step", "recorded", "called"),
    [
        (("a", "b2", "c"), 1, "b", "b2"),  # renamed
        (("b", "a", "c"), 0, "a", "b"),  # reordered
        (("a", "x", "b", "c"), 1, "b", "x"),  # inserted
        (("a", "c"), 1, "b", "c"),  # removed
    ],
    ids=["renamed", "reordered", "inserted", "removed"],
)
def test_changed_workflow_is_nondeterministic(db_path, changed, bad_step, recorded, called):
    counts: Counter[str] = Counter()
    app, seq = _build_sequence(db_path, ORIGINAL, counts)
    switch = crash_at(app, "before_step", nth=3)  # a and b are recorded, c is not
    crash_then_close(app, switch, lambda a: a.start(seq, workflow_id="nd-1"))
    assert counts == {"a": 1, "b": 1}

    app, seq = _build_sequence(db_path, changed, counts)
    with app:
        handle = app.handle("nd-1")
        with pytest.raises(ld.NonDeterminismError) as info:
            handle.result(timeout=30)
        message = str(info.value)
        assert "'nd-1'" in message and f"step {bad_step}" in message
        assert f"{recorded!r}" in message and f"{called!r}" in message
        # The fields callers match on keep their form: kind and name, unquoted.
        assert (info.value.workflow_id, info.value.step) == ("nd-1", bad_step)
        assert (info.value.recorded, info.value.called) == (f"step {recorded}", f"step {called}")
        assert handle.status() is ld.Status.NONDETERMINISTIC
        [listed] = app.list_workflows(status="nondeterministic")
        assert listed.workflow_id == "nd-1"
        assert [s.name for s in app.steps("nd-1")] == ["a", "b"]
    assert counts == {"a": 1, "b": 1}  # nothing ran: replay stopped at the mismatch

    # Parked, not retried in a loop: further launches leave it alone.
    for order in (changed, ORIGINAL):
        app, seq = _build_sequence(db_path, order, counts)
        with app:
            assert app.handle("nd-1").status() is ld.Status.NONDETERMINISTIC
            [info_row] = app.list_workflows()
            assert info_row.recovery_attempts <= 1
            assert len(app.steps("nd-1")) == 2
    assert counts == {"a": 1, "b": 1}


def test_workflow_that_now_ends_before_its_recorded_steps_is_nondeterministic(db_path):
    """A step removed at the end (the code returns earlier now) is as much a change as one
    removed in the middle: the recorded step the code never reaches parks the workflow, instead
    of a success that silently drops what the journal says happened (G4)."""
    counts: Counter[str] = Counter()
    app, seq = _build_sequence(db_path, ORIGINAL, counts)
    switch = crash_at(app, "before_step", nth=3)  # a and b are recorded, c is not
    crash_then_close(app, switch, lambda a: a.start(seq, workflow_id="nd-end"))

    app, seq = _build_sequence(db_path, ("a",), counts)
    with app:
        handle = app.handle("nd-end")
        with pytest.raises(ld.NonDeterminismError) as info:
            handle.result(timeout=30)
        assert "step 1 was recorded as step 'b'" in str(info.value)
        assert "ended before reaching it" in str(info.value)
        assert handle.status() is ld.Status.NONDETERMINISTIC
        assert replay_check(app, app._parts()[0], app._row("nd-end")) is not None
    assert counts == {"a": 1, "b": 1}


def test_a_workflow_now_raising_before_its_recorded_steps_says_what_it_raised(db_path):
    """The same rule for code that now *raises* before a recorded step (a new check, inputs
    that no longer decode as the new signature's types): the workflow is parked, and the
    message must carry what the code raised. It said only that the function "ended before
    reaching" the step, and the exception that explains it was lost."""
    counts: Counter[str] = Counter()
    app, seq = _build_sequence(db_path, ORIGINAL, counts)
    switch = crash_at(app, "before_step", nth=3)  # a and b are recorded, c is not
    crash_then_close(app, switch, lambda a: a.start(seq, workflow_id="nd-raise"))

    app = ld.App(db_path, app_version="v1")

    @app.step(name="a")
    def a() -> str:
        return "a"

    @app.workflow(name="seq")
    def seq_now() -> list[str]:
        a()
        raise ValueError("orders must now be signed")

    with app:
        handle = app.handle("nd-raise")
        with pytest.raises(ld.NonDeterminismError) as info:
            handle.result(timeout=30)
        message = str(info.value)
        assert "step 1 was recorded as step 'b'" in message
        assert "ValueError: orders must now be signed" in message
        assert handle.status() is ld.Status.NONDETERMINISTIC
        problem = replay_check(app, app._parts()[0], app._row("nd-raise"))
        assert problem is not None and "orders must now be signed" in problem


# -- recovery limit -------------------------------------------------------------------------


def _build_crashy(path: str, counts: Counter[str]):
    app = ld.App(path, app_version="v1")

    @app.step(name="fine")
    def fine() -> int:
        counts["fine"] += 1
        return 1

    @app.step(name="poison")
    def poison() -> int:
        counts["poison"] += 1
        return 2

    @app.workflow(name="crashy", max_recovery_attempts=2)
    def crashy() -> int:
        return fine() + poison()

    switch = crash_at(app, "before_step", when=lambda info: info["name"] == "poison")
    return app, crashy, switch


def test_recovery_limit_parks_the_workflow_as_exhausted(db_path):
    counts: Counter[str] = Counter()
    app, crashy, switch = _build_crashy(db_path, counts)
    crash_then_close(app, switch, lambda a: a.start(crashy, workflow_id="loop"))
    relaunches = 0
    while True:
        relaunches += 1
        assert relaunches <= 5, "the workflow was recovered past its limit"
        app, crashy, switch = _build_crashy(db_path, counts)
        with app:  # launch() claims the workflow, then parks it or runs it into the crash
            status = stored_status(db_path, "loop")
            if status != "pending":
                break
            assert switch.wait(30), "a recovered workflow did not run"
    assert status == "exhausted"
    assert relaunches == 3  # attempts 1 and 2 ran and crashed; the third exceeds the limit
    assert counts == {"fine": 1}

    app, _, _ = _build_crashy(db_path, counts)
    with app:
        with pytest.raises(ld.WorkflowExhaustedError, match="loop"):
            app.handle("loop").result(timeout=30)
        [info] = app.list_workflows(status=ld.Status.EXHAUSTED)
        assert info.workflow_id == "loop"
    assert counts == {"fine": 1}


# -- no leaked threads ----------------------------------------------------------------------


def _build_fanout(path: str, clock: FakeClock):
    app = ld.App(path, clock=clock, app_version="v1", workers=4)

    @app.step(name="square")
    def square(x: int) -> int:
        return x * x

    @app.workflow(name="fanout")
    def fanout(n: int) -> int:
        futures = [ld.go(square, i) for i in range(n)]
        first = ld.select([*futures, ld.after(3600)])
        # Any step may win under load; the timer cannot (the clock is fake), so this is 55.
        return sum(ld.wait_all(futures)) + (0 if first in futures else 1)

    @app.workflow(name="sleeper")
    def sleeper() -> str:
        ld.sleep(3600)
        return "awake"

    return app, fanout, sleeper


def test_close_joins_every_thread(db_path):
    assert engine_thread_names() == []
    clock = FakeClock()
    app, fanout, sleeper = _build_fanout(db_path, clock)
    with app:
        assert app.run(fanout, 6) == 55
        sleeping = app.start(sleeper, workflow_id="sleeper")
        eventually(lambda: "sleep" in [s.kind for s in app.steps("sleeper")],
                   "sleeper to record its sleep step")  # the wake-up instant is in the journal
        assert engine_thread_names() != []
    assert engine_thread_names() == []

    clock.advance(3600)  # the recorded wake-up instant has passed
    app, fanout, sleeper = _build_fanout(db_path, clock)
    with app:
        assert app.handle(sleeping.workflow_id).result(timeout=30) == "awake"
    assert engine_thread_names() == []

    app, fanout, _ = _build_fanout(db_path, clock)
    switch = crash_at(app, "after_commit", nth=3)
    crash_then_close(app, switch, lambda a: a.start(fanout, 6, workflow_id="f"))
    assert engine_thread_names() == []
    app, _, _ = _build_fanout(db_path, clock)
    with app:
        assert app.handle("f").result(timeout=30) == 55
    assert engine_thread_names() == []


# -- crash_test, with a negative control ----------------------------------------------------


def _make_good(path: str):
    app = ld.App(path, clock=FakeClock(), app_version="good", workers=2)

    @app.step(name="fetch")
    def fetch(x: int) -> int:
        return x * 2

    @app.workflow(name="good")
    def good(n: int) -> list[int]:
        a = ld.go(fetch, n)
        b = ld.go(fetch, n + 1)
        first = ld.select([a, ld.after(60)])  # the timer never fires on a FakeClock
        both = ld.wait_all([a, b])
        return [first.result(), *both, fetch(n + 2)]

    return app, good


def test_crash_test_passes_a_correct_workflow():
    result = crash_test(_make_good, args=(5,))
    assert result.outcome == ("value", [10, 10, 12, 14])
    points = {point for point, _ in result.crashes}
    assert {
        "before_step",
        "after_body",
        "after_commit",
        "before_decision",
        "after_decision",
        "before_outcome",
    } <= points
    assert len(result.crashes) >= 10


def test_crash_test_runs_the_crashes_it_is_given():
    result = crash_test(_make_good, args=(5,),
                        crashes=[("after_commit", 2), ("before_decision", 1), ("after_body", 99)])
    assert result.crashes == [("after_commit", 2), ("before_decision", 1)]  # 99 never happens
    with pytest.raises(ValueError, match="no_such_point"):
        crash_test(_make_good, args=(5,), crashes=[("no_such_point", 1)])


@settings(max_examples=5, derandomize=True, deadline=None, database=None)
@given(crash_schedules(max_occurrence=3, max_crashes=2))
def test_crash_schedules_drive_crash_test(crashes):
    assert 1 <= len(crashes) <= 2
    assert all(point in CRASH_POINTS and 1 <= nth <= 3 for point, nth in crashes)
    assert crash_test(_make_good, args=(5,), crashes=crashes).outcome == (
        "value", [10, 10, 12, 14])


def test_crash_test_catches_a_broken_workflow():
    """Negative control: branching on state outside the journal must be caught."""
    calls = [0]

    def make_broken(path: str):
        app = ld.App(path, clock=FakeClock(), app_version="broken")

        @app.step(name="fetch")
        def fetch(x: int) -> int:
            return x * 2

        @app.step(name="other")
        def other(x: int) -> int:
            return x * 3

        @app.workflow(name="broken")
        def broken(n: int) -> int:
            calls[0] += 1  # a counter outside any step: replay sees another value
            first = fetch(n) if calls[0] % 2 else other(n)
            return first + fetch(n + 1)

        return app, broken

    with pytest.raises(CrashTestError, match="crash at"):
        crash_test(make_broken, args=(1,))


# -- real processes -------------------------------------------------------------------------

CHAIN_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, threading
    import litedurable as ld

    path, ledger, mode = sys.argv[1:4]
    app = ld.App(path, app_version="v1")

    def note(line):
        fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\\n").encode())
        finally:
            os.close(fd)

    @app.step(name="work")
    def work(i: int) -> int:
        note(f"start {i}")
        if mode == "first":
            # widen the window for the kill; step 5 never returns in the first process, so
            # the kill always lands mid-way, whatever the machine's speed
            threading.Event().wait(3600 if i == 5 else 0.02)
        note(f"end {i}")
        return i * i

    @app.workflow(name="chain")
    def chain(n: int) -> int:
        total = 0
        for i in range(n):
            total += work(i)
        return total

    with app:
        if mode == "first":
            app.start(chain, 8, workflow_id="victim")
            threading.Event().wait(3600)  # until SIGKILL
        else:
            print(json.dumps(app.handle("victim").result(timeout=60)), flush=True)
    """
)


def _ledger_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _wait_for_line(path: Path, line: str, proc: subprocess.Popen[str]) -> None:
    def written() -> bool:
        if line in _ledger_lines(path):
            return True
        assert proc.poll() is None, f"child exited early: {proc.communicate()}"
        return False

    # the timeout is a hang guard, not an assertion about speed
    eventually(written, f"the child to write {line!r}", timeout=60)


@pytest.mark.timeout(120)
def test_sigkill_mid_workflow_then_recover_in_a_new_process(tmp_path, db_path):
    script = tmp_path / "chain.py"
    script.write_text(CHAIN_SCRIPT)
    ledger = tmp_path / "ledger.txt"
    env = child_env()
    child = subprocess.Popen(
        [sys.executable, str(script), db_path, str(ledger), "first"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_line(ledger, "start 3", child)
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)  # reap it, so its pid is really gone
    assert child.returncode == -signal.SIGKILL
    before = _ledger_lines(ledger)
    started_before = [int(line.split()[1]) for line in before if line.startswith("start")]
    last = max(started_before)
    assert 3 <= last <= 5 and started_before == list(range(last + 1))

    done = subprocess.run(
        [sys.executable, str(script), db_path, str(ledger), "recover"],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == sum(i * i for i in range(8))

    starts = Counter(
        int(line.split()[1]) for line in _ledger_lines(ledger) if line.startswith("start")
    )
    for i in range(8):
        if i < last:  # committed before the kill: never again
            assert starts[i] == 1, (i, starts)
        elif i == last:  # in flight at the kill: at least once, at most twice
            assert starts[i] in (1, 2), (i, starts)
        else:
            assert starts[i] == 1, (i, starts)

    with open_storage(db_path, readonly=True) as journal:
        assert journal.check() == []
        assert [row.step for row in journal.load_steps("victim")] == list(range(8))


RECOVER_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, threading
    import litedurable as ld
    from litedurable.testing import crash_at

    path, ledger, mode = sys.argv[1:4]
    IDS = [f"wf-{k}" for k in range(5)]
    app = ld.App(path, app_version="v1")
    barrier = threading.Barrier(len(IDS))

    def note(line):
        fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\\n").encode())
        finally:
            os.close(fd)

    @app.step(name="s")
    def s(wid: str, i: int) -> int:
        note(f"{os.getpid()} {wid} {i}")
        if mode == "seed" and i == 1:
            barrier.wait(60)  # every workflow is inside step 1 when the first one dies
        return i

    @app.workflow(name="wf")
    def wf(wid: str) -> int:
        return sum(s(wid, i) for i in range(4))

    if mode == "seed":
        switch = crash_at(app, "after_body", when=lambda info: info["step"] == 1)
        app.launch()
        for wid in IDS:
            app.start(wf, wid, workflow_id=wid)
        assert switch.wait(60)
        os._exit(0)  # die without closing anything
    with app:
        print(json.dumps({wid: app.handle(wid).result(timeout=60) for wid in IDS}), flush=True)
    """
)


@pytest.mark.timeout(120)
def test_two_processes_recover_one_file_without_double_execution(tmp_path, db_path):
    script = tmp_path / "recover.py"
    script.write_text(RECOVER_SCRIPT)
    ledger = tmp_path / "ledger.txt"
    env = child_env()

    def spawn(mode: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(script), db_path, str(ledger), mode],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    seed = spawn("seed")
    out, err = seed.communicate(timeout=90)
    assert seed.returncode == 0, err
    seed_pid = str(seed.pid)

    recoverers = [spawn("recover"), spawn("recover")]
    for proc in recoverers:
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        assert json.loads(out) == {f"wf-{k}": 6 for k in range(5)}

    runs: dict[tuple[str, int], list[str]] = {}
    for line in _ledger_lines(ledger):
        pid, wid, i = line.split()
        runs.setdefault((wid, int(i)), []).append(pid)
    for k in range(5):
        wid = f"wf-{k}"
        assert runs[(wid, 0)] == [seed_pid]  # committed before the crash: never again
        first, again = runs[(wid, 1)]  # in flight at the crash: exactly one re-run
        assert first == seed_pid and again != seed_pid
        # one recoverer, and only one, ran the rest of the workflow
        assert runs[(wid, 2)] == [again] and runs[(wid, 3)] == [again]
