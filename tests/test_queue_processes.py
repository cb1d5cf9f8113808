"""Queues consumed by several OS processes on one journal, some of them SIGKILLed meanwhile.

The consumers are ``queue_worker.py`` processes: each builds the same App (queue ``jobs``,
workflow ``job`` whose one step appends ``start``/``end`` lines with its pid and wall time to a
shared ledger) and serves until killed. The test process builds that App too, enqueues every
workflow from it and stays a consumer to the end: an App only gets a ``Queue`` to enqueue on by
declaring it, and a launched App consumes what it declares. It is never killed, and its pid is
in the ledger like any other, so the checks treat it as one more consumer.

What the ledger and the journal must show (``problems`` is the checker, shared with the
negative control):

* every enqueued workflow ends ``succeeded`` with its own result, and its step is recorded
  once (one outcome per workflow);
* a step starts more than once only when the processes of all but one of its starts were
  killed (a killed step is run again elsewhere: at least once, never twice in live processes);
* at no instant do more than ``concurrency`` steps run across the processes, nor more than
  ``worker_concurrency`` in one process. A step whose process was killed before its ``end``
  line counts as running until the kill (the instant after ``wait`` reaped the process: its
  workflow stays ``pending``, holding its queue slot, until another process recovers it, which
  needs the process gone);
* nothing starves: every workflow succeeds before a generous hang guard.

The nemesis SIGKILLs a consumer every 0.3-0.7 s (one busy in a step when there is one, read
from the ledger's open starts) and starts a replacement, for at least five rounds and until a
kill has cut a step; then the survivors finish. The consumers' lease is 1 s: short, so a dead
consumer's workflows are taken over soon, yet three missed heartbeats long, so a live consumer
stalled by a loaded machine is not presumed dead (which would make a legitimate second start).

Found here first: recovery used to take a dead consumer's queued workflows over whatever the
recovering App's ``worker_concurrency``; it now puts them back in their queue, and
``test_recovery_puts_a_dead_consumers_workflow_back_in_its_queue`` pins that. Every run is
counted by both the global and the per-process checks.

The rate limit is checked on the journal's ``dequeued_at`` instants (read with ``sqlite3``),
exactly as the dequeue judges its rolling window, not on step start times, which scheduling
delays after a dequeue can bring closer together.

The negative control runs the consumers with the ``racy_dequeue`` defect (count and pick in a
read, claim in a separate write that does not re-check): the same checker must report the
queue's concurrency exceeded or a workflow started twice.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from queue_worker import build
from support import child_env, eventually

import litedurable as ld
from litedurable._backends import _split_schema, is_server_url
from litedurable.testing import crash_at

WORKER = str(Path(__file__).resolve().parent / "queue_worker.py")


# -- the ledger and its checker -------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One start of a workflow's step in one process, until its end line or its kill."""

    workflow_id: str
    pid: int
    start: float
    end: float
    killed: bool  # its process was killed before it wrote its end line


def read_ledger(path: Path) -> list[tuple[str, str, int, float]]:
    """The ledger's lines as (kind, workflow id, pid, time), in file order."""
    if not path.exists():
        return []
    lines = []
    for line in path.read_text().splitlines():
        kind, wid, pid, at = line.split()
        lines.append((kind, wid, int(pid), float(at)))
    return lines


def runs(lines: Iterable[tuple[str, str, int, float]], kills: dict[int, float],
         problems: list[str]) -> list[Run]:
    """Pair each start with its end line in the same process, or with its process's kill."""
    open_: dict[tuple[str, int], list[float]] = defaultdict(list)
    done: list[Run] = []
    for kind, wid, pid, at in lines:
        if kind == "start":
            open_[wid, pid].append(at)
        elif kind != "end":
            continue
        elif open_[wid, pid]:
            done.append(Run(wid, pid, open_[wid, pid].pop(0), at, False))
        else:
            problems.append(f"{wid} ended in pid {pid} without a start there")
    for (wid, pid), starts in open_.items():
        for at in starts:
            if pid in kills:
                done.append(Run(wid, pid, at, max(at, kills[pid]), True))
            else:
                problems.append(f"{wid} started in pid {pid} (not killed) and never ended")
    return done


def most_at_once(spans: Iterable[Run]) -> tuple[int, float]:
    """The most runs in progress at one instant, and the first such instant (an end at the
    instant of a start frees its slot first)."""
    events = sorted([(r.start, 1) for r in spans] + [(r.end, -1) for r in spans])
    busy = most = 0
    when = 0.0
    for at, delta in events:
        busy += delta
        if busy > most:
            most, when = busy, at
    return most, when


def problems(lines: list[tuple[str, str, int, float]], kills: dict[int, float], *,
             concurrency: int, worker_concurrency: int | None) -> list[str]:
    """What the ledger shows against the queue's guarantees (empty: nothing wrong)."""
    found: list[str] = []
    spans = runs(lines, kills, found)
    most, when = most_at_once(spans)
    if most > concurrency:
        found.append(f"concurrency exceeded: {most} runs at once (limit {concurrency}) "
                     f"at {when!r}")
    by_pid: dict[int, list[Run]] = defaultdict(list)
    by_workflow: dict[str, list[Run]] = defaultdict(list)
    for span in spans:
        by_pid[span.pid].append(span)
        by_workflow[span.workflow_id].append(span)
    if worker_concurrency is not None:
        for pid, own in sorted(by_pid.items()):
            most, when = most_at_once(own)
            if most > worker_concurrency:
                found.append(f"worker_concurrency exceeded in pid {pid}: {most} runs at once "
                             f"(limit {worker_concurrency}) at {when!r}")
    for wid, starts in sorted(by_workflow.items()):
        alive = [s for s in starts if s.pid not in kills]
        if len(alive) > 1:
            found.append(f"{wid} started twice in processes never killed: "
                         f"{[(s.pid, s.start) for s in alive]}")
    return found


# -- the consumer processes -------------------------------------------------------------------


class Consumers:
    """The consumer processes: started, SIGKILLed (the kill instant recorded), stopped."""

    def __init__(self, db_path: str, ledger: Path, config: dict[str, Any]) -> None:
        self.db_path, self.ledger, self.config = db_path, ledger, json.dumps(config)
        self.live: list[subprocess.Popen[bytes]] = []
        self.kills: dict[int, float] = {}

    def start(self, count: int = 1) -> None:
        for _ in range(count):
            self.live.append(subprocess.Popen(
                [sys.executable, WORKER, self.db_path, str(self.ledger), self.config],
                env=child_env()))

    def ready(self) -> None:
        """Wait until every live consumer is launched (its ``ready`` line is in)."""
        def launched() -> bool:
            pids = {p for kind, _, p, _ in read_ledger(self.ledger) if kind == "ready"}
            return pids >= {proc.pid for proc in self.live}
        eventually(launched, "the consumers to launch", timeout=60)

    def kill(self, rng: random.Random) -> int:
        """SIGKILL one at random, preferring those in a step now (the ledger's open starts);
        its kill instant is taken once it is reaped (dead)."""
        steps: dict[int, int] = defaultdict(int)  # started minus ended, by pid
        for kind, _, pid, _ in read_ledger(self.ledger):
            steps[pid] += {"start": 1, "end": -1}.get(kind, 0)
        busy = [proc for proc in self.live if steps[proc.pid] > 0]
        victim = rng.choice(busy or self.live)
        self.live.remove(victim)
        victim.kill()
        victim.wait(60)
        self.kills[victim.pid] = time.time()
        return victim.pid

    def stop(self) -> None:
        """SIGTERM the rest (``serve`` closes gracefully); SIGKILL any that hangs."""
        for proc in self.live:
            proc.send_signal(signal.SIGTERM)
        for proc in self.live:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(60)
                raise AssertionError(f"consumer {proc.pid} did not stop on SIGTERM") from None
        self.live.clear()


@contextmanager
def consumers(db_path: str, ledger: Path, config: dict[str, Any]) -> Iterator[Consumers]:
    group = Consumers(db_path, ledger, config)
    try:
        yield group
    finally:
        for proc in group.live:
            if proc.poll() is None:
                proc.kill()
            proc.wait(60)


def statuses(app: ld.App) -> dict[str, ld.Status]:
    return {w.workflow_id: w.status for w in app.list_workflows(queue="jobs")}


def all_ended(app: ld.App, count: int) -> bool:
    found = statuses(app)
    return len(found) == count and all(s.is_terminal for s in found.values())


def dequeue_instants(db_path: str) -> list[float]:
    """Every ``dequeued_at`` of queue ``jobs``, read with plain sqlite3 (or psycopg, from
    the schema a PostgreSQL URL names), sorted: no storage method returns it."""
    query = "SELECT dequeued_at FROM workflows WHERE queue = 'jobs' AND dequeued_at IS NOT NULL"
    if is_server_url(db_path):
        import psycopg

        dsn, schema = _split_schema(db_path)
        with psycopg.connect(dsn) as pg:
            pg.execute(psycopg.sql.SQL("SET search_path TO {}").format(
                psycopg.sql.Identifier(schema)))
            rows = pg.execute(query).fetchall()
    else:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            rows = conn.execute(query).fetchall()
        finally:
            conn.close()
    return sorted(float(at) for at, in rows)


# -- the tests ----------------------------------------------------------------------------------


def test_checker_sees_overlaps_double_starts_and_killed_runs() -> None:
    """The checker itself: a killed run ends at its kill; what it must report, it reports."""
    clean = [("start", "a", 1, 1.0), ("start", "b", 2, 1.5), ("end", "a", 1, 2.0),
             ("start", "a", 3, 2.5), ("end", "a", 3, 3.0)]
    # pid 2 was killed at 2.2: b's run there ended then, and b ran again in pid 3 after it
    clean += [("start", "b", 3, 3.0), ("end", "b", 3, 3.5)]
    assert problems(clean, {2: 2.2}, concurrency=2, worker_concurrency=1) == [
        "a started twice in processes never killed: [(1, 1.0), (3, 2.5)]"]
    assert problems(clean, {2: 2.2, 1: 9.0}, concurrency=2, worker_concurrency=1) == []
    assert problems(clean, {2: 2.2, 1: 9.0}, concurrency=1, worker_concurrency=1) == [
        "concurrency exceeded: 2 runs at once (limit 1) at 1.5"]
    # killed later, b's first run still holds its slot when a starts in pid 3
    assert problems(clean, {2: 2.6, 1: 9.0}, concurrency=1, worker_concurrency=1) == [
        "concurrency exceeded: 2 runs at once (limit 1) at 1.5"]
    assert problems([*clean, ("start", "c", 4, 2.55), ("end", "c", 4, 2.9)],
                    {2: 2.6, 1: 9.0}, concurrency=2, worker_concurrency=1) == [
        "concurrency exceeded: 3 runs at once (limit 2) at 2.55"]
    assert problems([*clean, ("start", "d", 3, 2.8), ("end", "d", 3, 2.9)], {1: 9.0},
                    concurrency=9, worker_concurrency=1) == [
        "b started in pid 2 (not killed) and never ended",
        "worker_concurrency exceeded in pid 3: 2 runs at once (limit 1) at 2.8"]


@pytest.mark.both_backends  # also on PostgreSQL
def test_queued_workflows_run_once_within_limits_while_consumers_are_killed(
        tmp_path: Path, db_path: str) -> None:
    rng = random.Random(7)
    ledger = tmp_path / "ledger"
    config = {"concurrency": 3, "worker_concurrency": 2, "pause": 0.04}
    count = 150
    with consumers(db_path, ledger, config) as group:
        group.start(3)
        group.ready()
        app, queue, job = build(db_path, str(ledger), **config)  # type: ignore[arg-type]
        with app:
            for n in range(count):
                queue.enqueue(job, f"job-{n:03}", n, workflow_id=f"job-{n:03}")
            cut = 0  # kills that caught a step between its start and end lines
            for round_ in range(12):
                if (round_ >= 5 and cut) or all_ended(app, count):
                    break
                time.sleep(rng.uniform(0.3, 0.7))
                pid = group.kill(rng)
                lines = read_ledger(ledger)
                started = {w for k, w, p, _ in lines if p == pid and k == "start"}
                ended = {w for k, w, p, _ in lines if p == pid and k == "end"}
                cut += bool(started - ended)
                group.start()
            eventually(lambda: all_ended(app, count), lambda: f"every workflow to end; "
                       f"{sorted(statuses(app).items())[:10]}...", timeout=60)
            results = {f"job-{n:03}": app.handle(f"job-{n:03}").result(timeout=5)
                       for n in range(count)}
            step_rows = {f"job-{n:03}": [s.name for s in app.steps(f"job-{n:03}")]
                         for n in range(count)}
            recovered = {w.workflow_id for w in app.list_workflows(queue="jobs")
                         if w.recovery_attempts}
            group.stop()
    assert len(group.kills) >= 5
    assert cut >= 1, "no kill caught a step in progress: the nemesis tested nothing"
    assert results == {f"job-{n:03}": 2 * n + 1 for n in range(count)}
    assert all(rows == ["work"] for rows in step_rows.values()), step_rows
    lines = read_ledger(ledger)
    assert {w for k, w, _, _ in lines if k == "start"} == set(results)
    assert problems(lines, group.kills, concurrency=3, worker_concurrency=2) == []
    # a step cut by a kill left its workflow pending under a dead owner: it was recovered
    assert {r.workflow_id for r in runs(lines, group.kills, []) if r.killed} <= recovered
    # the test's own App consumed as well, and so did consumers that were later killed
    assert len({p for k, _, p, _ in lines if k == "start"} - {os.getpid()}) >= 3


@pytest.mark.both_backends  # also on PostgreSQL
def test_rate_limit_holds_across_processes(tmp_path: Path, db_path: str) -> None:
    ledger = tmp_path / "ledger"
    most, per = 5, 1.0
    config = {"rate_limit": [most, per], "pause": 0.01}
    count = 20
    with consumers(db_path, ledger, config) as group:
        group.start(2)
        group.ready()
        app, queue, job = build(db_path, str(ledger), **config)  # type: ignore[arg-type]
        with app:
            for n in range(count):
                queue.enqueue(job, f"job-{n:03}", n, workflow_id=f"job-{n:03}")
            eventually(lambda: all_ended(app, count), "every workflow to end", timeout=60)
            assert set(statuses(app).values()) == {ld.Status.SUCCEEDED}
            group.stop()
    instants = dequeue_instants(db_path)
    assert len(instants) == count
    # The dequeue's own test (``dequeued_at > now - per`` counts against the limit): the
    # (most+1)-th dequeue after any dequeue comes a full period later, no tolerance.
    crowded = [(instants[i], instants[i + most]) for i in range(count - most)
               if instants[i] > instants[i + most] - per]
    assert crowded == []
    lines = read_ledger(ledger)
    assert problems(lines, {}, concurrency=count, worker_concurrency=None) == []
    assert len({p for k, _, p, _ in lines if k == "start"}) >= 2  # the limit was shared


@pytest.mark.parametrize("defects", [[], ["racy_dequeue"]], ids=["sound", "racy_dequeue"])
def test_negative_control_racy_dequeue_is_caught(tmp_path: Path, db_path: str,
                                                 defects: list[str]) -> None:
    """Four processes and this one race for one slot with fast jobs: the sound dequeue passes
    the checker, the broken one (read, then an unchecked claim, in every consumer) fails it."""
    ledger = tmp_path / "ledger"
    config = {"concurrency": 1, "pause": 0.005, "defects": defects}
    count = 60
    found: list[str] = []
    with consumers(db_path, ledger, config) as group:
        group.start(4)
        group.ready()
        app, queue, job = build(db_path, str(ledger), **config)  # type: ignore[arg-type]
        with app:
            for n in range(count):
                queue.enqueue(job, f"job-{n:03}", n, workflow_id=f"job-{n:03}")

            def caught() -> bool:
                found[:] = [p for p in problems(read_ledger(ledger), {}, concurrency=1,
                                                worker_concurrency=None)
                            if "exceeded" in p or "twice" in p]
                return bool(found) or all_ended(app, count)

            eventually(caught, "a violation or every workflow to end", timeout=60)
            ended = statuses(app)
            group.stop()
    if defects:
        assert found, "the racy dequeue went unnoticed: the checker would miss the defect"
    else:
        assert set(ended.values()) == {ld.Status.SUCCEEDED}
        assert problems(read_ledger(ledger), {}, concurrency=1, worker_concurrency=None) == []
        assert len({p for k, _, p, _ in read_ledger(ledger) if k == "start"}) >= 2


@pytest.mark.both_backends  # also on PostgreSQL
def test_recovery_puts_a_dead_consumers_workflow_back_in_its_queue(db_path: str) -> None:
    """B runs its one allowed workflow (worker_concurrency=1) when consumer A dies holding
    another: B's recovery puts that one back in its queue, to run when B has room.

    Found by the nemesis above. Two Apps in this process stand for two processes: A dies at
    its step's crash point (its writes refused from then on) and is closed, which makes its
    owner token gone at once. B then runs one recovery round (its heartbeat's, called here):
    ``a`` is enqueued again, and starts only after ``b`` ends."""
    gate = threading.Event()
    ledger: list[tuple[str, str]] = []

    def make() -> tuple[ld.App, ld.Queue, Any]:
        app = ld.App(db_path, lease=60)  # no heartbeat recovery: the test's own
        queue = app.queue("jobs", worker_concurrency=1)

        @app.step(name="hold")
        def hold(name: str) -> str:
            ledger.append(("start", name))
            if name == "b":
                gate.wait(30)
            ledger.append(("end", name))
            return name

        @app.workflow(name="job")
        def job(name: str) -> str:
            return hold(name)

        return app, queue, job

    b_app, b_queue, b_job = make()
    a_app, a_queue, a_job = make()
    switch = crash_at(a_app, "before_step")
    with b_app:
        b_queue.enqueue(b_job, "b", workflow_id="b")
        eventually(lambda: ("start", "b") in ledger, "B to run b")
        with a_app:  # A takes a (B is full) and dies before a's step body
            a_queue.enqueue(a_job, "a", workflow_id="a")
            assert switch.wait(30)
        assert b_app.recover() == ["a"]  # what B's heartbeat does once per lease (B is full)
        assert b_app.handle("a").status() == ld.Status.ENQUEUED
        assert ("start", "a") not in ledger
        gate.set()
        assert b_app.handle("a").result(timeout=30) == "a"
        assert b_app.handle("b").result(timeout=30) == "b"
    assert ledger.index(("end", "b")) < ledger.index(("start", "a")), ledger
