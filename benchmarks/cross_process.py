"""Cross-process wake-up latency: how soon one process sees what another committed.

Two workloads, each printing one JSON line:

* ``cross_process_result``: a worker process finishes a workflow; this process is blocked in
  ``Handle.result()``. Latency = our return time minus the worker's ``after_outcome`` hook
  time (the outcome is durable then).
* ``cross_process_cancel``: this process cancels a workflow whose step runs in the worker and
  polls ``ld.cancelled()``. Latency = the time the step saw it minus our ``cancel()`` return.

Plus ``idle_watch_cpu``: the CPU an idle launched App burns (the 5 ms ``data_version`` watch),
as a percentage of one core. Both processes are on this host, so their clocks agree.

    python benchmarks/cross_process.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import litedurable as ld

WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import litedurable as ld

    path, folder, rounds = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    app = ld.App(path, app_version="worker")

    @app.step(name="hold")
    def hold(n: int) -> str:
        gate = folder / f"gate-{n}"
        while not gate.exists():
            if ld.cancelled():
                (folder / f"saw-{n}").write_text(repr(time.time()))
                return "cancelled"
            time.sleep(0.0002)
        return "released"

    @app.workflow(name="held")
    def held(n: int) -> str:
        return hold(n)

    def stamp(point, info):
        if point == "after_outcome":
            (folder / f"done-{info['workflow_id']}").write_text(repr(time.time()))

    app.faults.callback = stamp
    with app:
        for n in range(rounds):
            handle = app.start(held, n, workflow_id=f"w-{n}")
            try:
                handle.result(timeout=60)
            except ld.WorkflowCancelledError:
                while not app.steps(f"w-{n}"):
                    time.sleep(0.001)
    """
)


def _stamp(path: Path, limit: float = 60.0) -> float:
    """The time the worker wrote to ``path`` (waiting for the write to be complete)."""
    deadline = time.monotonic() + limit
    while True:
        try:
            return float(path.read_text())
        except (FileNotFoundError, ValueError):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} never got its time stamp") from None
            time.sleep(0.0005)


def _handle(app: ld.App, workflow_id: str) -> ld.Handle[object]:
    deadline = time.monotonic() + 60
    while True:
        try:
            return app.handle(workflow_id)
        except ld.WorkflowNotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.001)


def _summary(name: str, samples_ms: list[float]) -> dict[str, object]:
    ordered = sorted(samples_ms)
    return {
        "workload": name, "rounds": len(ordered),
        "median_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 2),
        "max_ms": round(ordered[-1], 2), "target_ms": 100,
        "met": ordered[max(0, int(len(ordered) * 0.95) - 1)] < 100,
    }


def measure(rounds: int) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = str(folder / "journal.db")
        script = folder / "worker.py"
        script.write_text(WORKER)
        lines: list[dict[str, object]] = []
        with ld.App(path, app_version="waiter") as app:
            worker = subprocess.Popen(
                [sys.executable, str(script), path, str(folder), str(2 * rounds)]
            )
            try:
                result_ms, cancel_ms = [], []
                for n in range(2 * rounds):
                    handle = _handle(app, f"w-{n}")
                    if n % 2 == 0:
                        (folder / f"gate-{n}").touch()
                        handle.result(timeout=60)
                        returned = time.time()
                        done = _stamp(folder / f"done-w-{n}")
                        result_ms.append((returned - done) * 1000)
                    else:
                        time.sleep(0.01)  # let the step start polling
                        handle.cancel()
                        cancelled = time.time()
                        saw = _stamp(folder / f"saw-{n}")
                        cancel_ms.append((saw - cancelled) * 1000)
            finally:
                for n in range(2 * rounds):
                    (folder / f"gate-{n}").touch()
                worker.wait(60)
            lines.append(_summary("cross_process_result", result_ms))
            lines.append(_summary("cross_process_cancel", cancel_ms))
            before = resource.getrusage(resource.RUSAGE_SELF)
            started = time.monotonic()
            time.sleep(2.0)
            after = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
            lines.append({
                "workload": "idle_watch_cpu", "seconds": 2.0,
                "cpu_percent_of_one_core": round(100 * cpu / (time.monotonic() - started), 2),
                "pid": os.getpid(),
            })
        return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="measurements of each kind")
    args = parser.parse_args()
    for line in measure(args.rounds):
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
