"""Fan out 1,000 jobs from one workflow through a queue that runs at most 8 at once.

Shows ``q.enqueue`` inside a workflow: each call is a journaled child start that returns a
``ChildHandle`` at once, so the parent enqueues all 1,000 jobs first, then collects their
results. The queue's ``concurrency=8`` bounds how many of them run at a time (across every
process on the file); the jobs themselves count how many are in flight, and the peak is
printed. The parent is closed halfway through and resumed by a fresh App: the children it
already enqueued are found again by their recorded ids, not enqueued twice.

    python examples/queue_fanout.py [journal.db]
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable

import litedurable as ld

JOBS, LIMIT = 1000, 8
RUNS: Counter[int] = Counter()  # job -> how many times its step ran
in_flight = peak = 0
lock = threading.Lock()


def make_app(path: str) -> tuple[ld.App, Callable[[int], int]]:
    app = ld.App(path)
    jobs = app.queue("jobs", concurrency=LIMIT)

    @app.step(name="square")
    def square(n: int) -> int:
        global in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
            RUNS[n] += 1
        time.sleep(0.002)  # the "work"
        with lock:
            in_flight -= 1
        return n * n

    @app.workflow(name="job")
    def job(n: int) -> int:
        return square(n)

    @app.workflow(name="fan_out")
    def fan_out(count: int) -> int:
        children = [jobs.enqueue(job, n) for n in range(count)]  # ChildHandles, at once
        return sum(child.result() for child in children)

    return app, fan_out


def main(path: str) -> None:
    began = time.monotonic()
    app, fan_out = make_app(path)
    with app:  # stopped once a third of the jobs ran: the parent stays pending
        app.start(fan_out, JOBS, workflow_id="fan-out")
        while sum(RUNS.values()) < JOBS // 3:
            time.sleep(0.005)
    stopped_after = sum(RUNS.values())
    app, fan_out = make_app(path)
    with app:  # resumes the parent; the jobs still enqueued or running carry on
        total = app.handle("fan-out").result(timeout=120)
        children = app.list_workflows(name="job", limit=None)
    elapsed = time.monotonic() - began
    expected = sum(n * n for n in range(JOBS))
    once = sorted(RUNS) == list(range(JOBS)) and set(RUNS.values()) == {1}
    print(f"stopped after {stopped_after} jobs, resumed in a fresh App")
    print(f"{len(children)} jobs enqueued, sum of squares: {total} (expected {expected})")
    print(f"peak concurrency observed: {peak} (queue limit {LIMIT})")
    print(f"took {elapsed:.1f} s")
    ok = total == expected and once and len(children) == JOBS and peak <= LIMIT
    print(f"every job ran once, at most {LIMIT} at a time: {ok}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(os.path.join(tmp, "queue_fanout.db"))
