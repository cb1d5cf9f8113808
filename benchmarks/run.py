"""Benchmark runner: one JSON line per workload, with the raw SQLite baseline from the same run.

    python benchmarks/run.py            # full sizes
    python benchmarks/run.py --quick    # tiny sizes (a smoke run; the tests use it)

Figures are medians over ``--repeat`` runs. Every workload also reports a ratio against a
baseline measured here and now (raw apsw commits, or the ideal wall time), because absolute
numbers on a shared machine mean little. Never a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import apsw

import litedurable as ld
from litedurable.testing import FakeClock


def _median(fn: Callable[[str], float], repeat: int) -> float:
    results = []
    for i in range(repeat):
        with tempfile.TemporaryDirectory() as d:
            results.append(fn(os.path.join(d, f"bench-{i}.db")))
    return statistics.median(results)


def raw_commit_seconds(path: str, durability: str, n: int) -> float:
    """Seconds per single-row transaction with apsw alone, WAL mode (the floor for a step)."""
    conn = apsw.Connection(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
    payload = os.urandom(200)
    start = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (?, ?)", (i, payload))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed / n


def sequential_steps(path: str, durability: str, n: int) -> float:
    """Seconds per step of one workflow running ``n`` trivial steps in a row."""
    app = ld.App(path, durability=durability)  # type: ignore[arg-type]

    @app.step()
    def inc(i: int) -> int:
        return i + 1

    @app.workflow()
    def chain(count: int) -> int:
        value = 0
        for _ in range(count):
            value = inc(value)
        return value

    with app:
        start = time.perf_counter()
        assert app.run(chain, n) == n
        return (time.perf_counter() - start) / n


def many_workflows(path: str, durability: str, n: int, clients: int) -> float:
    """Workflows per second: ``n`` three-step workflows started by ``clients`` threads."""
    app = ld.App(path, durability=durability)  # type: ignore[arg-type]

    @app.step()
    def inc(i: int) -> int:
        return i + 1

    @app.workflow()
    def three(x: int) -> int:
        return inc(inc(inc(x)))

    with app:
        def client(k: int) -> None:
            handles = [app.start(three, i) for i in range(k, n, clients)]
            for h in handles:
                h.result()

        start = time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return n / (time.perf_counter() - start)


def fan_out(path: str, durability: str, n: int, step_seconds: float) -> float:
    """Wall seconds for ``n`` concurrent ``go`` steps of ``step_seconds`` each, wait_all'ed."""
    app = ld.App(path, durability=durability)  # type: ignore[arg-type]

    @app.step()
    def work(i: int) -> int:
        time.sleep(step_seconds)
        return i

    @app.workflow()
    def fan(count: int) -> int:
        return sum(ld.wait_all([ld.go(work, i) for i in range(count)]))

    with app:
        start = time.perf_counter()
        app.run(fan, n)
        return time.perf_counter() - start


def sleeping_threads(path: str, n: int) -> dict[str, Any]:
    """Threads alive while ``n`` workflows sleep durably, and time to wake them all."""
    clock = FakeClock()
    app = ld.App(path, clock=clock)

    @app.workflow()
    def nap(i: int) -> int:
        ld.sleep(3600)
        return i

    with app:
        handles = [app.start(nap, i) for i in range(n)]
        peak = threading.active_count()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            peak = max(peak, threading.active_count())
            if sum(len(app.steps(h.workflow_id)) for h in handles[-5:]) == 5:
                break
            time.sleep(0.01)
        settle = time.monotonic() + 2
        while time.monotonic() < settle:
            peak = max(peak, threading.active_count())
            time.sleep(0.05)
        start = time.perf_counter()
        clock.advance(3600)
        assert [h.result(timeout=120) for h in handles] == list(range(n))
        return {"threads_peak": peak, "wake_all_s": round(time.perf_counter() - start, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    quick = args.quick
    repeat = 1 if quick else args.repeat
    n_steps, n_wf, n_fan, n_sleep = (20, 20, 10, 20) if quick else (1000, 1000, 100, 1000)

    def emit(record: dict[str, Any]) -> None:
        record["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        print(json.dumps(record), flush=True)

    for durability in ("full", "normal"):
        raw = _median(lambda p, d=durability: raw_commit_seconds(p, d, n_steps), repeat)
        emit({"workload": "raw_commit", "durability": durability, "us": round(raw * 1e6, 1)})
        per_step = _median(lambda p, d=durability: sequential_steps(p, d, n_steps), repeat)
        emit({"workload": "a_sequential_steps", "durability": durability, "steps": n_steps,
              "us_per_step": round(per_step * 1e6, 1), "ratio_to_raw": round(per_step / raw, 2)})
        for clients in (1, 8):
            rate = _median(
                lambda p, d=durability, c=clients: many_workflows(p, d, n_wf, c), repeat
            )
            emit({"workload": "b_three_step_workflows", "durability": durability,
                  "clients": clients, "workflows": n_wf, "per_s": round(rate, 1)})
        wall = _median(lambda p, d=durability: fan_out(p, d, n_fan, 0.01), repeat)
        emit({"workload": "c_fan_out", "durability": durability, "steps": n_fan,
              "wall_ms": round(wall * 1e3, 1), "ratio_to_ideal": round(wall / 0.01, 2)})
    with tempfile.TemporaryDirectory() as d:
        emit({"workload": "sleeping_workflows", "workflows": n_sleep,
              **sleeping_threads(os.path.join(d, "sleep.db"), n_sleep)})


if __name__ == "__main__":
    main()
