"""Benchmark runner: one JSON line per workload, with the raw SQLite baseline from the same run.

    python benchmarks/run.py                  # full sizes (issue 6's workloads a-f)
    python benchmarks/run.py --quick          # tiny sizes (a smoke run; the tests use it)
    python benchmarks/run.py --peer dbos      # DBOS Transact side by side, if installed
    python benchmarks/run.py --only a,d       # a subset (raw baselines always run)
    python benchmarks/run.py --only pingpong,stream   # issue 14's messages and streams
    python benchmarks/run.py --only queues --durability full --peer dbos   # queues.py
    python benchmarks/run.py --durability full   # one durability only
    python benchmarks/run.py --profile DIR    # cProfile every thread, one .pstats a workload
    python benchmarks/profile_summary.py DIR/a-litedurable-full.pstats   # where time goes
    python benchmarks/run.py --backend postgres --durability full --peer dbos   # issue 17: a-d, f
                                              # on one local PostgreSQL server (see pg.py)

Every figure is a median over ``--repeat`` runs, each in a fresh forked process on a fresh
file, printed next to a baseline measured in this same run and their ratio, because absolute
numbers on a shared machine mean little. The raw apsw commit baseline is measured again inside
every repetition's process just before the workload, and ``ratio`` is the median of the
per-repetition ratios, so load that changes from minute to minute cancels pairwise. Other
baselines: the ideal wall time (c), an empty journal measured alternately (e).

Issue 14's workloads: ``pingpong`` (two workflows exchanging messages with ``ld.send``/
``ld.recv``, in one App and across two processes on one file; figure: one-way p50 in ms, send
begun to recv returned; ``ratio`` is that over the raw commit; target at full: cross-process
p50 < 10 ms) and ``stream`` (a workflow in a second process writes values with
``ld.write_stream``, this one reads them live with ``app.read_stream``; values/s from the
first write to the last read). The DBOS peer polls its notifications every 5 ms there
(``dbos_peer.POLL_S``; its SQLite default is 1 s), shown as ``peer_poll_s``.

Queues (``queues``, see ``queues.py``): ``queue_drain`` (workflows/s of 1 and 2 consumer
processes draining no-op workflows enqueued beforehand; target at full: >= 1,000/s),
``queue_latency`` (enqueue in this process to the workflow's first line in a consumer
process; p50/p90/p99; target at full: p50 < 10 ms) and ``queue_rate_limit`` (starts per
window against ``rate_limit=(50, 1.0)``, 1 and 2 consumers). DBOS's queues poll at their
default 1 s (``peer_queue_poll_s``).

(a) has a baseline of its own, the *floor*: a raw apsw commit of the leanest record a step
could be, a small row (workflow id text, step int, 8-byte output blob) written by one
autocommit ``INSERT`` into a ``WITHOUT ROWID`` table with ``PRIMARY KEY (workflow_id, step)``,
WAL mode, the same ``synchronous`` as the durability under test, on a file of its own
(``ld_workloads.FloorCommitter``). Floor commits and raw commits are interleaved with the
steps themselves, 100 of each in turn (the three take turns going first), and (a)'s
``ratio`` (target: <= 2.0 at normal, <= 1.3 at full) is the median per-repetition ratio of a
step to the floor; the old raw figure stays in the line as ``raw_commit_us`` and
``raw_ratio``. Lines that
issue 6's table sets a target for carry ``target`` and ``met``. Peak RSS is the measuring
process's own. Never a pass/fail test.

Line fields: ``workload``, ``engine``, ``durability``, the sizes, ``figure`` (the name of the
headline field) and that field, ``baseline`` (the name of the baseline field) and that field,
``ratio`` (figure / baseline, median over repetitions), ``reps``, ``peak_rss_mb``, and
``target``/``met`` where the issue has one. Peer lines add ``litedurable_speedup`` (how many
times better litedurable's figure is than the peer's on the same workload and durability).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from types import ModuleType
from typing import Any

import ld_workloads
import queues
from harness import Target, WorkloadError, copy_database, emit, isolated, median, sig

try:
    import pg  # --backend postgres (needs psycopg: pip install 'litedurable[postgres]')
except ImportError:
    pg = None  # type: ignore[assignment]

DURABILITIES = ("full", "normal")
WORKLOADS = ("a", "b", "c", "d", "e", "f", "sleep", "pingpong", "stream", "queues")
PG_WORKLOADS = ("a", "b", "c", "d", "e", "f")  # --backend postgres (queues fill SQLite files)
LOWER_IS_BETTER = ("us_per_step", "wall_ms", "us_per_select", "us_per_yield", "p50_ms")


@dataclass(frozen=True)
class Sizes:
    """How big each workload is (issue 6's sizes, or a smoke-test version)."""

    raw: int
    a_steps: int
    b_workflows: int
    c_steps: int
    d_workflows: int
    e_steps: int
    e_rows: tuple[int, ...]
    f_select_futures: int
    f_select_rounds: int
    f_as_completed: int
    sleepers: int
    round_trips: int
    stream_values: int
    queue_drain: int
    queue_samples: int
    queue_jobs: int
    queue_rate: tuple[int, float]
    d_steps: int = 10
    d_done: int = 5
    c_step_s: float = 0.01
    queue_gap_s: float = 0.02

    @classmethod
    def full(cls) -> Sizes:
        return cls(raw=1000, a_steps=1000, b_workflows=1000, c_steps=100, d_workflows=1000,
                   e_steps=1000, e_rows=(100_000, 1_000_000), f_select_futures=100,
                   f_select_rounds=100, f_as_completed=1000, sleepers=1000,
                   round_trips=500, stream_values=2000, queue_drain=10_000,
                   queue_samples=200, queue_jobs=300, queue_rate=(50, 1.0))

    @classmethod
    def quick(cls) -> Sizes:
        return cls(raw=50, a_steps=20, b_workflows=20, c_steps=10, d_workflows=20, e_steps=20,
                   e_rows=(2_000,), f_select_futures=10, f_select_rounds=10, f_as_completed=20,
                   sleepers=20, round_trips=10, stream_values=20, queue_drain=100,
                   queue_samples=10, queue_jobs=20, queue_rate=(10, 0.5))


@dataclass
class Engine:
    """A workload module (litedurable's or a peer's) and how many repetitions it gets."""

    name: str
    module: ModuleType
    repeat: int
    info: dict[str, Any]


@dataclass
class Runs:
    """The repetitions of one workload: results, paired raw-commit baselines, peak RSS."""

    values: list[Any]
    raw_s: list[float]  # seconds per raw commit measured in each repetition's child, first
    rss: float

    def figure(self, get: Callable[[Any], float] = float) -> float:
        return median([get(v) for v in self.values])

    def ratio(self, get: Callable[[Any], float], *, rate: bool) -> float:
        """Median of per-repetition ratios to the paired baseline (drift cancels pairwise)."""
        if rate:  # workflows/s against raw commits/s
            return median([get(v) * r for v, r in zip(self.values, self.raw_s, strict=True)])
        return median([get(v) / r for v, r in zip(self.values, self.raw_s, strict=True)])


class Runner:
    """Runs each workload on each engine and durability and prints its line."""

    def __init__(self, sizes: Sizes, engines: list[Engine], only: set[str],
                 profile_dir: str | None, durabilities: Sequence[str] = DURABILITIES,
                 pg_admin: str | None = None) -> None:
        self.sizes = sizes
        self.durabilities = durabilities
        self.engines = engines
        self.only = only
        self.profile_dir = profile_dir
        self.pg_admin = pg_admin  # --backend postgres: the server's admin DSN
        # litedurable's headline figure per (workload key, durability), for peer speedups
        self.ours: dict[tuple[str, str], float] = {}

    # -- measuring --------------------------------------------------------------------------

    def measure(self, label: str, fn: Callable[[str], Any], repeat: int,
                paired: str | None = None) -> Runs:
        """Run ``fn(fresh_path)`` ``repeat`` times, each in its own forked child.

        With ``paired`` (a durability), each child first measures the raw commit time on a
        file of its own, so every repetition has a baseline taken seconds before it: on a
        shared machine the load changes from minute to minute, and a ratio of two figures
        measured together is what stays meaningful. Only the first repetition is profiled.
        """
        def with_raw(path: str) -> tuple[float, Any]:
            assert paired is not None
            raw = ld_workloads.raw_commit_seconds(path + ".raw", paired, self.sizes.raw)
            return raw, fn(path)

        values, raws, rss = [], [], 0.0
        for i in range(repeat):
            if paired is None:
                value, peak = self.once(label if i == 0 else None, fn)
            else:
                (raw, value), peak = self.once(label if i == 0 else None, with_raw)
                raws.append(raw)
            values.append(value)
            rss = max(rss, peak)
        return Runs(values, raws, rss)

    def once(self, label: str | None, fn: Callable[[str], Any]) -> tuple[Any, float]:
        """``fn(path)`` on a fresh path in a fresh temporary directory, in a forked child
        (with ``--backend postgres``: a fresh database's DSN, dropped afterwards)."""
        if self.pg_admin is not None:
            dsn = pg.create_database(self.pg_admin)
            try:
                return self.run_isolated(label, lambda: fn(dsn))
            finally:
                pg.drop_database(self.pg_admin, dsn)
        with tempfile.TemporaryDirectory(prefix="ld-bench-") as d:
            path = os.path.join(d, "bench.db")
            return self.run_isolated(label, lambda: fn(path))

    def run_isolated(self, label: str | None, fn: Callable[[], Any]) -> tuple[Any, float]:
        profile_to = None
        if self.profile_dir is not None and label is not None:
            profile_to = os.path.join(self.profile_dir, f"{label}.pstats")
        return isolated(fn, profile_to=profile_to)

    def line(self, engine: Engine, workload: str, durability: str, params: dict[str, Any],
             figure: tuple[str, float], baseline: tuple[str, float] | None, ratio: float | None,
             reps: int, rss: float, targets: Sequence[Target] = (), key: str | None = None,
             extra: dict[str, Any] | None = None, compare: bool = True) -> None:
        """Print one result line (and remember litedurable's figure for the peer's line).

        ``compare=False``: no ``litedurable_speedup`` (a figure where more is not better).
        """
        name, value = figure
        record: dict[str, Any] = {"workload": workload, "engine": engine.name,
                                  "durability": durability, **params,
                                  "figure": name, name: sig(value)}
        if baseline is not None and ratio is not None:
            record.update({"baseline": baseline[0], baseline[0]: sig(baseline[1]),
                           "ratio": sig(ratio, 3)})
        record.update(extra or {})
        record.update({"reps": reps, "peak_rss_mb": rss})
        key = key or workload
        peer_targets: list[Target] = []
        if engine.name == "litedurable":
            self.ours[(key, durability)] = value
        elif compare and (key, durability) in self.ours:
            ours = self.ours[(key, durability)]
            speedup = value / ours if name in LOWER_IS_BETTER else ours / value
            record["litedurable_speedup"] = sig(speedup, 3)
            # issue 6 (SQLite): b8 >= 20x DBOS; issue 17 (PostgreSQL): b8 >= 5x, d >= 10x
            wanted = {"b8": 5, "d": 10} if self.pg_admin else {"b8": 20}
            if key in wanted and durability == "full":
                peer_targets.append(Target("litedurable_speedup", ">=", wanted[key]))
        if engine.name != "litedurable":
            record.update(engine.info)
            if key.startswith(("pingpong", "stream")):
                record["peer_poll_s"] = engine.module.POLL_S
            if key.startswith("queue"):
                record["peer_queue_poll_s"] = queues.DBOS_POLL_S
            targets = peer_targets  # the targets are litedurable's
        emit(record, targets)

    def wanted(self, workload: str) -> bool:
        return not self.only or workload in self.only

    # -- workloads --------------------------------------------------------------------------

    def raw(self, durability: str) -> None:
        """Raw apsw commits, alone and with 8 threads contending: the run-level baselines.

        Ratios use the raw commit time measured inside each repetition's own process (see
        ``measure``); these lines show the baseline on its own and under contention.
        """
        s = self.sizes
        repeat = self.engines[0].repeat
        runs = self.measure(f"raw-{durability}", lambda p: ld_workloads.raw_commit_seconds(
            p, durability, s.raw), repeat)
        raw_us = runs.figure() * 1e6
        raw_engine = "apsw" if self.pg_admin is None else "psycopg"
        emit({"workload": "raw_commit", "engine": raw_engine, "durability": durability,
              "commits": s.raw, "figure": "us", "us": sig(raw_us),
              "per_s": sig(1e6 / raw_us), "reps": repeat, "peak_rss_mb": runs.rss})
        if not self.wanted("b"):
            return
        runs = self.measure(
            f"raw8-{durability}",
            lambda p: ld_workloads.raw_commit_threads_per_s(p, durability, s.raw, 8), repeat,
            paired=durability)
        emit({"workload": "raw_commit_8_threads", "engine": raw_engine, "durability": durability,
              "commits": s.raw, "threads": 8, "figure": "per_s", "per_s": sig(runs.figure()),
              "baseline": "raw_commits_per_s", "raw_commits_per_s": sig(1 / median(runs.raw_s)),
              "ratio": sig(runs.ratio(float, rate=True), 3),
              "reps": repeat, "peak_rss_mb": runs.rss})

    def a(self, engine: Engine, durability: str) -> None:
        """One workflow of sequential steps against the floor, interleaved every 100 steps.

        The ratio and target are against the floor (``FloorCommitter``: one autocommit insert
        of a small row into a ``WITHOUT ROWID`` table keyed by (workflow, step)); the older raw
        baseline (``BEGIN IMMEDIATE``, a 200-byte row in a rowid table, ``COMMIT``) stays in
        the line as ``raw_commit_us`` and ``raw_ratio``.
        """
        n = self.sizes.a_steps
        runs = self.measure(f"a-{engine.name}-{durability}", partial(
            engine.module.sequential_steps_interleaved, durability=durability, n=n),
            engine.repeat)
        # Issue 6 (SQLite) set the target against the floor; issue 17 (PostgreSQL) against a
        # raw single-row INSERT then COMMIT through psycopg, which is ``raw_ratio`` there.
        target = Target("raw_ratio" if self.pg_admin else "ratio", "<=",
                        1.3 if durability == "full" else 2.0)
        self.line(engine, "a_sequential_steps", durability, {"steps": n},
                  ("us_per_step", runs.figure(lambda r: r["per_step_s"]) * 1e6),
                  ("floor_commit_us", runs.figure(lambda r: r["floor_s"]) * 1e6),
                  median([r["per_step_s"] / r["floor_s"] for r in runs.values]),
                  engine.repeat, runs.rss, [target],
                  extra={"raw_commit_us": sig(runs.figure(lambda r: r["raw_s"]) * 1e6),
                         "raw_ratio": sig(median(
                             [r["per_step_s"] / r["raw_s"] for r in runs.values]), 3),
                         "wall_us_per_step": sig(
                             runs.figure(lambda r: r["wall_per_step_s"]) * 1e6),
                         "baseline_interleaved": True})

    def b(self, engine: Engine, durability: str) -> None:
        n = self.sizes.b_workflows
        for clients in (1, 8):
            runs = self.measure(
                f"b{clients}-{engine.name}-{durability}",
                partial(engine.module.many_workflows, durability=durability, n=n,
                        clients=clients),
                engine.repeat, paired=durability)
            targets = [Target("peak_rss_mb", "<", 80)]
            if clients == 8 and durability == "full" and self.pg_admin is None:
                targets.insert(0, Target("per_s", ">=", 1000))  # issue 6 (SQLite)
            self.line(engine, "b_three_step_workflows", durability,
                      {"clients": clients, "workflows": n}, ("per_s", runs.figure()),
                      ("raw_commits_per_s", 1 / median(runs.raw_s)),
                      runs.ratio(float, rate=True), engine.repeat, runs.rss, targets,
                      key=f"b{clients}")

    def c(self, engine: Engine, durability: str) -> None:
        s = self.sizes
        runs = self.measure(f"c-{engine.name}-{durability}", lambda p: (
            engine.module.fan_out(p, durability, s.c_steps, s.c_step_s)), engine.repeat)
        wall_ms = runs.figure() * 1e3
        extra: dict[str, Any] = {}
        if engine.name == "litedurable":
            # Where the time goes: a fresh App starts a thread per step (the default pool is
            # big enough for one wave). The same fan-out on threads already started (a second
            # fan-out in the same App, default settings) is the engine's own overhead.
            warm_runs = self.measure(f"c-{engine.name}-{durability}-warm", lambda p: (
                engine.module.fan_out(p, durability, s.c_steps, s.c_step_s, warm=True)),
                engine.repeat)
            extra["warm_ratio"] = sig(warm_runs.figure() / s.c_step_s, 3)
            # The floor of a cold fan-out here: starting as many plain threads (each sleeping
            # a step's time). On a small VM that alone can exceed twice the ideal.
            threads = self.measure("c-plain-threads", lambda _: (
                ld_workloads.plain_threads(s.c_steps, s.c_step_s)), engine.repeat)
            extra["plain_threads_ms"] = sig(threads.figure() * 1e3, 3)
            extra["over_plain_threads"] = sig(runs.figure() / threads.figure(), 3)
        self.line(engine, "c_fan_out", durability,
                  {"steps": s.c_steps, "step_ms": s.c_step_s * 1e3}, ("wall_ms", wall_ms),
                  ("ideal_ms", s.c_step_s * 1e3), wall_ms / (s.c_step_s * 1e3), engine.repeat,
                  runs.rss, [Target("ratio", "<=", 2)], extra=extra)

    def d(self, engine: Engine, durability: str) -> None:
        s = self.sizes
        n, steps, done = s.d_workflows, s.d_steps, s.d_done
        with tempfile.TemporaryDirectory(prefix="ld-bench-crash-") as d:
            admin = self.pg_admin
            crashed = (os.path.join(d, "crashed.db") if admin is None
                       else pg.create_database(admin))
            victim, _ = self.run_isolated(None, lambda: engine.module.prepare_crashed(
                crashed, durability, n, steps, done))

            def recover(path: str) -> Any:
                if admin is not None:  # a copy of the crashed database, in place of path's
                    pg.drop_database(admin, path)
                    path = pg.create_database(admin, template=crashed)
                    try:
                        return engine.module.recover_crashed(path, durability, n, steps, done)
                    finally:
                        pg.drop_database(admin, path)
                copy_database(crashed, path)  # every repetition recovers the same crash
                return engine.module.recover_crashed(path, durability, n, steps, done)

            try:
                runs = self.measure(f"d-{engine.name}-{durability}", recover, engine.repeat,
                                    paired=durability)
            finally:
                if admin is not None:
                    pg.drop_database(admin, crashed)
        self.line(engine, "d_crash_recovery", durability,
                  {"workflows": n, "steps": steps, "recorded_before_kill": done},
                  ("per_s", runs.figure(lambda r: r["per_s"])),
                  ("raw_commits_per_s", 1 / median(runs.raw_s)),
                  runs.ratio(lambda r: r["per_s"], rate=True), engine.repeat, runs.rss,
                  [Target("per_s", ">=", 1000)] if self.pg_admin is None else [],
                  extra={"first_step_ms": sig(runs.figure(lambda r: r["first_step_s"]) * 1e3),
                         "reran_recorded_steps": max(r["reran"] for r in runs.values),
                         "victim_s": sig(victim["victim_s"]),
                         "step_rows_at_kill": victim["step_rows"]})

    def e(self, engine: Engine) -> None:
        """Step cost on a journal grown to each size, interleaved with an empty journal."""
        s = self.sizes
        if self.pg_admin is not None and engine.name != "litedurable":
            emit({"workload": "e_big_journal", "engine": engine.name, "skipped":
                  "--backend postgres fills litedurable's journal only"})
            return
        with contextlib.ExitStack() as stack:
            if self.pg_admin is None:
                big = os.path.join(stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="ld-bench-big-")), "big.db")
            else:
                big = pg.create_database(self.pg_admin)
                stack.callback(pg.drop_database, self.pg_admin, big)
            filled = 0
            for rows in s.e_rows:
                rows_now, _ = self.run_isolated(
                    None, partial(engine.module.fill_journal, big, rows - filled))
                filled = rows
                for durability in self.durabilities:
                    empty_runs, big_runs, rss = [], [], 0.0
                    for i in range(engine.repeat):
                        label = f"e-{rows}-{engine.name}-{durability}" if i == 0 else None
                        if hasattr(engine.module, "big_vs_empty"):  # both in one process
                            pair, peak = self.once(label, partial(
                                engine.module.big_vs_empty, big, durability=durability,
                                n=s.e_steps))
                            big_runs.append(pair["big_per_step_s"])
                            empty_runs.append(pair["empty_per_step_s"])
                            rss = max(rss, peak)
                            continue
                        empty, peak_e = self.once(  # a peer that cannot: one after the other
                            label and f"{label}-empty",
                            partial(engine.module.sequential_steps, durability=durability,
                                    n=s.e_steps))
                        full_journal, peak_b = self.run_isolated(
                            label, partial(engine.module.sequential_steps, big, durability,
                                           s.e_steps))
                        empty_runs.append(empty)
                        big_runs.append(full_journal)
                        rss = max(rss, peak_e, peak_b)
                    ratio = median([b / e for b, e in zip(big_runs, empty_runs, strict=True)])
                    self.line(engine, "e_big_journal", durability,
                              {"journal_rows": rows, "rows_in_file": rows_now,
                               "steps": s.e_steps},
                              ("us_per_step", median(big_runs) * 1e6),
                              ("empty_us_per_step", median(empty_runs) * 1e6), ratio,
                              engine.repeat, rss, [Target("ratio", "<=", 1.2)], key=f"e{rows}")

    def f(self, engine: Engine, durability: str) -> None:
        s = self.sizes
        runs = self.measure(f"f-select-{engine.name}-{durability}", lambda p: (
            engine.module.select_overhead(p, durability, s.f_select_futures,
                                          s.f_select_rounds)), engine.repeat, paired=durability)
        self.line(engine, "f_select", durability,
                  {"futures": s.f_select_futures, "selects": s.f_select_rounds},
                  ("us_per_select", runs.figure(lambda r: r["per_select_s"]) * 1e6),
                  ("raw_commit_us", median(runs.raw_s) * 1e6),
                  runs.ratio(lambda r: r["per_select_s"], rate=False), engine.repeat, runs.rss,
                  extra={"go_us_per_step": sig(
                      runs.figure(lambda r: r["go_per_step_s"]) * 1e6)})
        runs = self.measure(f"f-as-completed-{engine.name}-{durability}", lambda p: (
            engine.module.as_completed_overhead(p, durability, s.f_as_completed)),
            engine.repeat, paired=durability)
        self.line(engine, "f_as_completed", durability, {"futures": s.f_as_completed},
                  ("us_per_yield", runs.figure(lambda r: r["per_yield_s"]) * 1e6),
                  ("raw_commit_us", median(runs.raw_s) * 1e6),
                  runs.ratio(lambda r: r["per_yield_s"], rate=False), engine.repeat, runs.rss,
                  extra={"go_us_per_step": sig(
                      runs.figure(lambda r: r["go_per_step_s"]) * 1e6)})

    def pingpong(self, engine: Engine, durability: str) -> None:
        """Issue 14: two workflows exchanging messages, in one process and across two.

        The figure is the one-way p50 (send begun to recv returned), against the raw commit
        time measured in the same child just before (target at full: cross-process p50
        under 10 ms); round trips/s and p95 ride along.
        """
        n = self.sizes.round_trips
        for cross in (False, True):
            where = "cross_process" if cross else "in_process"
            runs = self.measure(f"pingpong-{where}-{engine.name}-{durability}", partial(
                engine.module.pingpong, durability=durability, n=n, cross_process=cross),
                engine.repeat, paired=durability)
            targets = ([Target("p50_ms", "<", 10)] if cross and durability == "full"
                       and engine.name == "litedurable" else [])
            self.line(engine, f"pingpong_{where}", durability, {"round_trips": n},
                      ("p50_ms", runs.figure(lambda r: r["p50_s"]) * 1e3),
                      ("raw_commit_ms", median(runs.raw_s) * 1e3),
                      runs.ratio(lambda r: r["p50_s"], rate=False), engine.repeat, runs.rss,
                      targets, key=f"pingpong-{where}",
                      extra={"p95_ms": sig(runs.figure(lambda r: r["p95_s"]) * 1e3),
                             "round_trips_per_s": sig(runs.figure(lambda r: r["per_s"]))})

    def stream(self, engine: Engine, durability: str) -> None:
        """Issue 14: values/s written by a workflow and read live by another process."""
        n = self.sizes.stream_values
        runs = self.measure(f"stream-{engine.name}-{durability}", partial(
            engine.module.stream_throughput, durability=durability, n=n), engine.repeat,
            paired=durability)
        self.line(engine, "stream_cross_process", durability, {"values": n},
                  ("per_s", runs.figure(lambda r: r["per_s"])),
                  ("raw_commits_per_s", 1 / median(runs.raw_s)),
                  runs.ratio(lambda r: r["per_s"], rate=True), engine.repeat, runs.rss,
                  extra={"end_to_end_ms": sig(runs.figure(lambda r: r["end_to_end_s"]) * 1e3),
                         "lag_p50_ms": sig(runs.figure(lambda r: r["lag_p50_s"]) * 1e3)})

    def queues(self, engine: Engine, durability: str) -> None:
        """Queues (``queues.py``): drain throughput with 1 and 2 consumer processes,
        enqueue-to-start latency across processes, rate-limit accuracy with 1 and 2
        consumers. Targets (litedurable, full): drain >= 1,000 workflows/s, p50 < 10 ms."""
        s = self.sizes
        full = durability == "full" and engine.name == "litedurable"
        for consumers in (1, 2):
            runs = self.measure(f"queue-drain{consumers}-{engine.name}-{durability}", partial(
                queues.drain, engine=engine.name, durability=durability, n=s.queue_drain,
                consumers=consumers), engine.repeat, paired=durability)
            self.line(engine, "queue_drain", durability,
                      {"consumers": consumers, "workflows": s.queue_drain},
                      ("per_s", runs.figure(lambda r: r["per_s"])),
                      ("raw_commits_per_s", 1 / median(runs.raw_s)),
                      runs.ratio(lambda r: r["per_s"], rate=True), engine.repeat, runs.rss,
                      [Target("per_s", ">=", 1000)] if full else [],
                      key=f"queue-drain{consumers}",
                      extra={"per_s_from_go": sig(runs.figure(lambda r: r["per_s_from_go"])),
                             "first_start_ms": sig(
                                 runs.figure(lambda r: r["first_start_s"]) * 1e3),
                             "enqueue_per_s": sig(runs.figure(lambda r: r["enqueue_per_s"])),
                             "consumer_cpu_us_per_wf": sig(
                                 runs.figure(lambda r: r["consumer_cpu_us_per_wf"])),
                             "split": runs.values[0]["split"]})
        runs = self.measure(f"queue-latency-{engine.name}-{durability}", partial(
            queues.latency, engine=engine.name, durability=durability,
            samples=s.queue_samples, gap=s.queue_gap_s), engine.repeat, paired=durability)

        def ms(field: str) -> float:
            return sig(runs.figure(lambda r: r[field]) * 1e3)

        self.line(engine, "queue_latency", durability,
                  {"samples": s.queue_samples, "gap_ms": s.queue_gap_s * 1e3},
                  ("p50_ms", runs.figure(lambda r: r["p50_s"]) * 1e3),
                  ("raw_commit_ms", median(runs.raw_s) * 1e3),
                  runs.ratio(lambda r: r["p50_s"], rate=False), engine.repeat, runs.rss,
                  [Target("p50_ms", "<", 10)] if full else [], key="queue-latency",
                  extra={"p90_ms": ms("p90_s"), "p99_ms": ms("p99_s"), "max_ms": ms("max_s"),
                         "from_call_p50_ms": ms("from_call_p50_s"),
                         "from_call_p99_ms": ms("from_call_p99_s"),
                         "enqueue_call_p50_ms": ms("enqueue_call_p50_s")})
        most, per = s.queue_rate
        for consumers in (1, 2):
            runs = self.measure(f"queue-rate{consumers}-{engine.name}-{durability}", partial(
                queues.rate, engine=engine.name, durability=durability, jobs=s.queue_jobs,
                most=most, per=per, consumers=consumers), engine.repeat)
            first = runs.values[0]
            self.line(engine, "queue_rate_limit", durability,
                      {"consumers": consumers, "jobs": s.queue_jobs, "limit": most,
                       "per_s": per},
                      ("max_per_window", runs.figure(lambda r: r["max_per_window"])),
                      None, None, engine.repeat, runs.rss, key=f"queue-rate{consumers}",
                      compare=False,
                      extra={"mean_per_window": sig(runs.figure(
                                 lambda r: r["mean_per_window"])),
                             "rolling_max": runs.figure(lambda r: r["rolling_max"]),
                             "rolling_max_dequeued": first["rolling_max_dequeued"],
                             "span_s": sig(runs.figure(lambda r: r["span_s"])),
                             "ideal_span_s": sig(first["ideal_span_s"]),
                             "total_s": sig(runs.figure(lambda r: r["total_s"])),
                             "first_start_ms": sig(
                                 runs.figure(lambda r: r["first_start_s"]) * 1e3),
                             "windows": first["windows"], "split": first["split"]})

    def sleep(self) -> None:
        n = self.sizes.sleepers
        runs = self.measure("sleep", lambda p: ld_workloads.sleeping_threads(p, n), 1)
        result = runs.values[0]
        emit({"workload": "sleeping_workflows", "engine": "litedurable", "durability": "full",
              "workflows": n, "figure": "threads_peak", "threads_peak": result["threads_peak"],
              "baseline": "workflows", "ratio": sig(result["threads_peak"] / n, 3),
              "wake_all_s": sig(result["wake_all_s"]), "reps": 1, "peak_rss_mb": runs.rss})

    # -- the whole run ----------------------------------------------------------------------

    def run(self) -> None:
        per_durability: list[tuple[str, Callable[[Engine, str], None]]] = [
            ("a", self.a), ("b", self.b), ("c", self.c), ("d", self.d), ("f", self.f),
            ("pingpong", self.pingpong), ("stream", self.stream), ("queues", self.queues)]
        for durability in self.durabilities:
            self.raw(durability)
            for key, workload in per_durability:
                if self.wanted(key):
                    for engine in self.engines:
                        self.guarded(engine, key, durability,
                                     partial(workload, engine, durability))
        if self.wanted("e"):
            for engine in self.engines:
                self.guarded(engine, "e", "both", partial(self.e, engine))
        if self.wanted("sleep"):
            self.guarded(self.engines[0], "sleep", "full", self.sleep)

    def guarded(self, engine: Engine, key: str, durability: str, fn: Callable[[], None]) -> None:
        """Run a workload; a peer's failure is a line, litedurable's ends the run (exit 1)."""
        try:
            fn()
        except WorkloadError as exc:
            if engine.name == "litedurable":
                raise
            emit({"workload": key, "engine": engine.name, "durability": durability,
                  "error": str(exc).strip().splitlines()[-1]})


def load_peer(name: str, repeat: int) -> Engine | None:
    """The peer engine if it imports (checked in a child, so this process stays lean)."""
    if name != "dbos":
        raise SystemExit(f"unknown peer {name!r}; the only peer is 'dbos'")
    try:
        version, _ = isolated(_dbos_version)
    except WorkloadError as exc:
        reason = str(exc).strip().splitlines()[-1]
        emit({"workload": "peer", "engine": "dbos", "skipped":
              f"peer mode skipped: DBOS Transact is not importable here ({reason}); "
              "`pip install dbos` into this environment to run it side by side"})
        return None
    import dbos_peer

    return Engine("dbos", dbos_peer, repeat,
                  {"dbos_version": version, "sqlite": dbos_peer.SQLITE_NOTE})


def _dbos_version() -> str:
    from importlib.metadata import version

    import dbos  # noqa: F401  (imported to prove it works, not just that it is on disk)

    return version("dbos")


def main(argv: Sequence[str] | None = None) -> None:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (median; default 3)")
    parser.add_argument("--peer", choices=["dbos"], help="also run the workloads on this peer")
    parser.add_argument("--peer-repeat", type=int, default=1,
                        help="repetitions for the peer (default 1: DBOS is ~20x slower)")
    parser.add_argument("--only", default="",
                        help=f"comma-separated subset of {','.join(WORKLOADS)}")
    parser.add_argument("--durability", choices=[*DURABILITIES, "both"], default="both",
                        help="run one durability only (default both)")
    parser.add_argument("--profile", metavar="DIR",
                        help="cProfile every thread of each workload's first repetition into "
                        "DIR/<workload>.pstats (figures are then slowed by the profiler)")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite",
                        help="postgres: every engine on one local PostgreSQL server (pg.py; "
                        "LITEDURABLE_BENCH_POSTGRES names one, else a throwaway one is started)")
    args = parser.parse_args(argv)
    only = {w for w in args.only.split(",") if w}
    if only - set(WORKLOADS):
        parser.error(f"--only takes {','.join(WORKLOADS)}; got {','.join(sorted(only))}")
    if args.backend == "postgres":
        if pg is None:
            parser.error("--backend postgres needs psycopg: pip install 'litedurable[postgres]'")
        only = only or set(PG_WORKLOADS)
        if only - set(PG_WORKLOADS):
            parser.error(f"--backend postgres runs {','.join(PG_WORKLOADS)} so far")
    repeat = 1 if args.quick else max(1, args.repeat)
    engines = [Engine("litedurable", ld_workloads, repeat, {})]
    if args.peer:
        peer = load_peer(args.peer, 1 if args.quick else max(1, args.peer_repeat))
        if peer is not None:
            engines.append(peer)
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    sizes = Sizes.quick() if args.quick else Sizes.full()
    try:
        durabilities = DURABILITIES if args.durability == "both" else (args.durability,)
        if args.backend == "sqlite":
            Runner(sizes, engines, only, args.profile, durabilities).run()
            return
        if any(e.name == "dbos" for e in engines) and durabilities != ("full",):
            parser.error("--backend postgres --peer dbos: DBOS runs at the server's "
                         "synchronous_commit (on); use --durability full")
        pg.install()
        with pg.server() as admin:
            settings = pg.server_settings(admin)
            emit({"workload": "server", "engine": "postgresql", **settings})
            for engine in engines[1:]:
                engine.info = {k: v for k, v in engine.info.items() if k != "sqlite"}
                engine.info["system_database"] = "postgresql, same server, fresh database"
            Runner(sizes, engines, only, args.profile, durabilities, admin).run()
    except WorkloadError as exc:
        print(json.dumps({"workload": "error", "error": str(exc)}), flush=True)
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
