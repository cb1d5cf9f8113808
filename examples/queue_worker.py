"""A worker process: ``litedurable worker MODULE:APP``, stopped with SIGTERM and started again.

Shows the long-running worker: this script enqueues 200 jobs, then starts
``python -m litedurable worker queue_worker:app`` (this very file, imported as a module),
sends it SIGTERM while it works, and starts a second worker. The first one closes gracefully:
running steps finish and are recorded, everything else stays in the journal. The second one
takes over what was dequeued but not done and consumes the rest. Each job's step appends a
line to a ledger file, so "nothing lost, nothing repeated" is read off the ledger.

Every App that declares a queue consumes it, this script's own included: the jobs it takes
while it enqueues (it has one run thread) are counted apart.

    python examples/queue_worker.py [journal.db]
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import litedurable as ld

JOBS = 200
HERE = Path(__file__).resolve().parent


def make_app(path: str, workflow_threads: int = 64
             ) -> tuple[ld.App, ld.Queue, Callable[[int], int]]:
    app = ld.App(path, workflow_threads=workflow_threads)
    jobs = app.queue("jobs", concurrency=4)

    @app.step(name="handle")
    def handle(n: int) -> int:
        time.sleep(0.005)  # the work
        with open(os.environ["QUEUE_WORKER_LEDGER"], "a") as ledger:
            ledger.write(f"{n} {os.getpid()}\n")
        return n

    @app.workflow(name="job")
    def job(n: int) -> int:
        return handle(n)

    return app, jobs, job


# What `litedurable worker queue_worker:app` serves (the worker's environment names the files).
app = make_app(os.environ.get("QUEUE_WORKER_DB", "queue_worker.db"))[0]


def read_ledger(ledger: Path) -> list[tuple[int, int]]:
    """(job, pid) of each complete ledger line (the last one may be half written)."""
    if not ledger.exists():
        return []
    lines = ledger.read_text().split("\n")[:-1]
    return [(int(n), int(pid)) for n, pid in (line.split() for line in lines)]


def start_worker(env: dict[str, str], output: Path) -> subprocess.Popen[bytes]:
    with open(output, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "litedurable", "worker", "queue_worker:app",
             "--log-level", "warning"],
            cwd=HERE, env=env, stdout=out)


def main(path: str) -> None:
    ledger = Path(path + ".ledger")
    ledger.unlink(missing_ok=True)
    env = {**os.environ, "QUEUE_WORKER_DB": os.path.abspath(path),
           "QUEUE_WORKER_LEDGER": str(ledger)}
    os.environ["QUEUE_WORKER_LEDGER"] = str(ledger)
    # One run thread here: this script is mostly the producer (it still runs a few jobs).
    here, queue, job = make_app(path, workflow_threads=1)
    with here:
        for n in range(JOBS):
            queue.enqueue(job, n, workflow_id=f"job-{n}")
    print(f"enqueued {JOBS} jobs")

    output = Path(path + ".worker1.out")
    first = start_worker(env, output)
    while "serving" not in output.read_text() and first.poll() is None:
        time.sleep(0.005)  # printed once the worker handles SIGTERM
    while sum(pid == first.pid for _, pid in read_ledger(ledger)) < JOBS // 4:
        if first.poll() is not None:
            sys.exit(f"worker 1 ended on its own (exit {first.returncode}):\n"
                     f"{output.read_text()}")
        time.sleep(0.005)
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=60)
    print(f"worker 1 (pid {first.pid}) got SIGTERM mid-run and exited with {first.returncode}")
    print("  " + output.read_text().strip().replace("\n", "\n  "))
    after_first = len(read_ledger(ledger))

    second = start_worker(env, Path(path + ".worker2.out"))
    while len(read_ledger(ledger)) < JOBS and second.poll() is None:
        time.sleep(0.005)
    second.send_signal(signal.SIGTERM)
    second.wait(timeout=60)
    print(f"worker 2 (pid {second.pid}) finished the rest, exited with {second.returncode}")

    done = read_ledger(ledger)
    by = Counter(pid for _, pid in done)
    counts = Counter(n for n, _ in done)
    print(f"jobs done: {len(counts)} of {JOBS}: by this script {by[os.getpid()]}, "
          f"by worker 1 {by[first.pid]}, by worker 2 {by[second.pid]} "
          f"({after_first} done when worker 1 stopped)")
    lost = JOBS - len(counts)
    repeated = sum(c - 1 for c in counts.values())
    print(f"lost: {lost}, repeated: {repeated}")
    ok = (lost == 0 and repeated == 0 and first.returncode == 0 and second.returncode == 0
          and by[first.pid] > 0)
    print(f"every job done exactly once across the SIGTERM: {ok}")
    sys.exit(0 if ok else 1)



if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(os.path.join(tmp, "queue_worker.db"))
