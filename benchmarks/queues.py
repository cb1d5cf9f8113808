"""Queue workloads: drain throughput, enqueue-to-start latency and rate-limit accuracy.

The same three measurements on litedurable (``app.queue``) and on DBOS Transact's queues on
its SQLite system database, each in consumer processes of their own on one file:

* ``drain``: ``n`` no-op workflows are enqueued first (by 8 threads of the measuring
  process, timed on their own as ``enqueue_per_s``), then 1 or 2 consumer processes are
  started, signal ready, and are let go at once (``go``). The figure is workflows/s from the
  first workflow's start to the instant the last one is durably finished (seen by a
  read-only connection polling every ``POLL_DONE`` s); ``per_s_from_go`` counts from ``go``
  instead (a consumer's first look at the queue included). ``consumer_cpu_us_per_wf``: the
  consumers' CPU time (user + system) from go to stop, per workflow.
* ``latency``: the measuring process enqueues one workflow at a time (``samples`` of them,
  ``gap`` seconds apart); one consumer process runs them. Each workflow records
  ``time.time()`` on its first line; latency = that minus the instant the enqueue call
  returned (the row is committed then). ``from_call`` figures count from the call instead.
* ``rate``: ``jobs`` workflows are enqueued, then 1 or 2 consumers drain them through a
  ``rate_limit=(most, per)`` queue. Starts (body stamps) per fixed ``per``-second window
  from the first dequeue the engine recorded (max and mean), the most starts in any rolling
  window (body stamps, which lag their dequeue by a few ms each, and the engine's own
  recorded dequeue instants: the limiter's exact check), and the span from the first start
  to the last (ideal: ``(jobs / most - 1) * per``, e.g. 5 s for 300 at 50/s: six windows).

Gates: a litedurable consumer launches with no queue declared and declares it at ``go``
(consuming starts there). A DBOS consumer launches listening to the queue
(``DBOS.listen_queues``) before the queue exists; the measuring process registers it at
``go`` (``DBOS.register_queue``, default ``polling_interval_sec=1.0``), and each
consumer's queue manager finds it within its 1 s check interval.

litedurable has no public enqueue-only App: every App that declares a queue consumes it.
The measuring process enqueues through a ``Queue`` built directly (``litedurable._queues``),
which is never declared, so it never consumes; DBOS's producer is launched with
``DBOS.listen_queues([])``.

Run as a script, this module is a consumer: ``python queues.py consumer ENGINE PATH
DURABILITY FOLDER INDEX RATE`` (RATE is ``most,per`` or ``-``).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw

QNAME = "bench-q"
WF_NAME = "bench_q_noop"
POLL_DONE = 0.002
"""Seconds between the measuring process's looks for 'nothing left enqueued or pending'."""
ENQUEUERS = 8
DBOS_POLL_S = 1.0
"""DBOS's queue polling interval here: its default (``DBOS.register_queue``'s
``polling_interval_sec``); the queue manager looks for newly registered queues every 1 s."""
DBOS_VERSION = "bench-queues"
PROFILE_ENV = "QBENCH_PROFILE"
"""Set to a folder: each consumer process profiles all its threads (cProfile) into it;
summarize with ``profile_summary.py``."""
LIMIT_S = 900.0  # no single wait in a workload lasts longer than this

_LEFT_SQL = {
    "litedurable": "SELECT count(*) FROM workflows WHERE status IN ('enqueued', 'pending')",
    "dbos": "SELECT count(*) FROM workflow_status WHERE status IN ('ENQUEUED', 'PENDING')",
}
_DEQUEUED_SQL = {
    "litedurable": "SELECT dequeued_at FROM workflows WHERE queue = ? "
                   "AND dequeued_at IS NOT NULL",
    "dbos": "SELECT started_at_epoch_ms / 1000.0 FROM workflow_status WHERE queue_name = ? "
            "AND started_at_epoch_ms IS NOT NULL",
}


# -- small helpers ---------------------------------------------------------------------------


def _wait_file(path: Path, procs: Sequence[subprocess.Popen[bytes]] = (),
               timeout: float = LIMIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a consumer exited with {proc.returncode} before {path.name}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.002)


def _left(conn: apsw.Connection, engine: str) -> int:
    return int(conn.execute(_LEFT_SQL[engine]).fetchall()[0][0])  # type: ignore[arg-type]


def _wait_drained(path: str, engine: str, procs: Sequence[subprocess.Popen[bytes]],
                  timeout: float = LIMIT_S) -> float:
    """``time.time()`` when no workflow is enqueued or pending any more (polled)."""
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    conn.setbusytimeout(30_000)
    deadline = time.monotonic() + timeout
    try:
        while _left(conn, engine):
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a consumer exited with {proc.returncode} mid-run")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{_left(conn, engine)} workflows still not finished")
            time.sleep(POLL_DONE)
        return time.time()
    finally:
        conn.close()


def _dequeue_instants(path: str, engine: str) -> list[float]:
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    conn.setbusytimeout(30_000)
    try:
        return sorted(float(r[0]) for r in conn.execute(_DEQUEUED_SQL[engine], (QNAME,)))
    finally:
        conn.close()


def _quantile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of an ordered sample."""
    rank = max(1, -(-len(ordered) * q // 1))
    return ordered[int(rank) - 1]


def _rolling_max(ordered: Sequence[float], per: float) -> int:
    """The most instants in any half-open window ``[t, t + per)``."""
    most, lo = 0, 0
    for hi, t in enumerate(ordered):
        while ordered[lo] <= t - per:
            lo += 1
        most = max(most, hi - lo + 1)
    return most


# -- the two engines: producer (this process) and consumers (child processes) ---------------


class _Producer:
    """Enqueues ``WF_NAME`` workflows on ``QNAME`` without consuming; opens the gate."""

    def __init__(self, engine: str, path: str, durability: str) -> None:
        self.engine, self.path, self.durability = engine, path, durability

    @contextmanager
    def launched(self) -> Iterator[_Producer]:
        if self.engine == "litedurable":
            import litedurable as ld

            app = ld.App(self.path, durability=self.durability)

            @app.workflow(name=WF_NAME)
            def noop(i: int) -> None:  # runs only in the consumers
                del i

            with app:
                queue = app.queue(QNAME, consume=False)  # a producer only
                self._enqueue: Callable[[int], Any] = lambda i: queue.enqueue(
                    noop, i, workflow_id=f"q-{i}")
                yield self
        else:
            from dbos import DBOS, SetWorkflowID

            os.environ["DBOS__VMID"] = "bench-q-producer"

            @DBOS.workflow(name=WF_NAME)
            def dbos_noop(i: int) -> None:
                del i

            def enqueue(i: int) -> Any:
                with SetWorkflowID(f"q-{i}"):
                    return DBOS.enqueue_workflow(QNAME, dbos_noop, i)

            self._enqueue = enqueue
            with _dbos_launched(self.path, self.durability, listen=[]):
                yield self

    def enqueue(self, i: int) -> None:
        self._enqueue(i)

    def enqueue_many(self, n: int) -> float:
        """Enqueue ``q-0`` .. ``q-{n-1}`` from ``ENQUEUERS`` threads; seconds taken."""
        errors: list[BaseException] = []

        def worker(k: int) -> None:
            try:
                for i in range(k, n, ENQUEUERS):
                    self.enqueue(i)
            except BaseException as exc:
                errors.append(exc)

        start = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(ENQUEUERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return time.perf_counter() - start

    def go(self, folder: Path, rate: tuple[int, float] | None) -> float:
        """Let the consumers consume; the ``time.time()`` of the gate."""
        if self.engine == "dbos":
            from dbos import DBOS

            limiter = None if rate is None else {"limit": rate[0], "period": rate[1]}
            now = time.time()
            DBOS.register_queue(QNAME, limiter=limiter,  # type: ignore[arg-type]
                                polling_interval_sec=DBOS_POLL_S)
        else:
            now = time.time()
        (folder / "go").touch()
        return now


@contextmanager
def _dbos_launched(path: str, durability: str, listen: list[str]) -> Iterator[Any]:
    import logging

    from dbos import DBOS
    from dbos_peer import _configure_sqlite

    _configure_sqlite(durability)
    config: dict[str, Any] = {"name": "ldbench", "system_database_url": f"sqlite:///{path}",
                              "log_level": "WARNING", "run_admin_server": False,
                              "application_version": DBOS_VERSION}
    DBOS(config=config)  # type: ignore[arg-type]
    logging.getLogger("dbos").setLevel(logging.WARNING)
    DBOS.listen_queues(listen)
    DBOS.launch()
    try:
        yield DBOS
    finally:
        DBOS.destroy(workflow_completion_timeout_sec=0)


def _consumer(engine: str, path: str, durability: str, folder: Path, index: int,
              rate: tuple[int, float] | None) -> None:
    """A consumer process: ready, wait for go, consume until told to stop, write stamps."""
    starts: dict[str, float] = {}
    cpu: list[float] = []  # this process's CPU seconds at go and at stop
    if engine == "litedurable":
        import litedurable as ld

        app = ld.App(path, durability=durability)

        @app.workflow(name=WF_NAME)
        def noop(i: int) -> None:
            starts.setdefault(str(i), time.time())

        with app:
            (folder / f"ready-{index}").touch()
            _wait_file(folder / "go")
            cpu.append(_cpu_s())
            app.queue(QNAME, rate_limit=rate)
            _wait_file(folder / "stop")
            cpu.append(_cpu_s())
    else:
        from dbos import DBOS

        @DBOS.workflow(name=WF_NAME)
        def dbos_noop(i: int) -> None:
            starts.setdefault(str(i), time.time())

        with _dbos_launched(path, durability, listen=[QNAME]):
            (folder / f"ready-{index}").touch()
            _wait_file(folder / "go")
            cpu.append(_cpu_s())
            _wait_file(folder / "stop")
            cpu.append(_cpu_s())
    with open(folder / f"starts-{index}.json", "w") as f:
        json.dump({"starts": starts, "cpu_s": cpu[1] - cpu[0]}, f)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def _consumers(engine: str, path: str, durability: str, folder: Path, count: int,
               rate: tuple[int, float] | None) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` consumer processes, all ready (launched) when this yields."""
    spec = "-" if rate is None else f"{rate[0]},{rate[1]}"
    procs = []
    for index in range(count):
        env = {**os.environ, "DBOS__VMID": f"bench-q-consumer-{index}"}
        procs.append(subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "consumer", engine, path, durability,
             str(folder), str(index), spec], env=env))
    try:
        for index in range(count):
            _wait_file(folder / f"ready-{index}", procs)
        yield procs
    finally:
        (folder / "stop").touch()
        for proc in procs:
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _read_starts(folder: Path, count: int, procs: Sequence[subprocess.Popen[bytes]]
                 ) -> tuple[list[dict[str, float]], float]:
    """Each consumer's start stamps, and their CPU seconds from go to stop, summed."""
    for proc in procs:
        if proc.returncode != 0:
            raise RuntimeError(f"a consumer exited with {proc.returncode}")
    out, cpu = [], 0.0
    for index in range(count):
        with open(folder / f"starts-{index}.json") as f:
            record = json.load(f)
        out.append({k: float(v) for k, v in record["starts"].items()})
        cpu += float(record["cpu_s"])
    return out, cpu


# -- the workloads ---------------------------------------------------------------------------


def drain(path: str, engine: str, durability: str, n: int, consumers: int) -> dict[str, Any]:
    """Workflows/s of ``consumers`` processes draining ``n`` enqueued no-op workflows."""
    folder = Path(path + ".q")
    folder.mkdir()
    producer = _Producer(engine, path, durability)
    with producer.launched():
        enqueue_s = producer.enqueue_many(n)
        with _consumers(engine, path, durability, folder, consumers, None) as procs:
            go = producer.go(folder, None)
            done = _wait_drained(path, engine, procs)
    per, cpu = _read_starts(folder, consumers, procs)
    stamps = [t for starts in per for t in starts.values()]
    if len(stamps) != n or len({k for starts in per for k in starts}) != n:
        raise RuntimeError(f"{len(stamps)} starts recorded for {n} workflows")
    first = min(stamps)
    return {"per_s": n / (done - first), "per_s_from_go": n / (done - go),
            "first_start_s": first - go, "enqueue_per_s": n / enqueue_s,
            "split": [len(s) for s in per], "consumer_cpu_us_per_wf": cpu / n * 1e6}


def latency(path: str, engine: str, durability: str, samples: int,
            gap: float) -> dict[str, Any]:
    """Enqueue-to-start latency: one enqueue every ``gap`` s here, one consumer process."""
    folder = Path(path + ".q")
    folder.mkdir()
    producer = _Producer(engine, path, durability)
    called: dict[str, float] = {}
    returned: dict[str, float] = {}
    with producer.launched(), _consumers(
            engine, path, durability, folder, 1, None) as procs:
        producer.go(folder, None)
        producer.enqueue(-1)  # warm-up: the consumer has found the queue once it ran
        _wait_drained(path, engine, procs)
        time.sleep(gap)
        next_at = time.monotonic()
        for i in range(samples):
            next_at += gap
            called[str(i)] = time.time()
            producer.enqueue(i)
            returned[str(i)] = time.time()
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        _wait_drained(path, engine, procs)
    (starts,), _ = _read_starts(folder, 1, procs)
    keys = [str(i) for i in range(samples)]
    lat = sorted(starts[k] - returned[k] for k in keys)
    lat_call = sorted(starts[k] - called[k] for k in keys)
    enq = sorted(returned[k] - called[k] for k in keys)
    return {**{f"p{q}_s": _quantile(lat, q / 100) for q in (50, 90, 99)},
            "from_call_p50_s": _quantile(lat_call, 0.5),
            "from_call_p99_s": _quantile(lat_call, 0.99),
            "enqueue_call_p50_s": _quantile(enq, 0.5), "max_s": lat[-1]}


def rate(path: str, engine: str, durability: str, jobs: int, most: int, per: float,
         consumers: int) -> dict[str, Any]:
    """Starts per window of ``jobs`` workflows through a ``rate_limit=(most, per)`` queue."""
    folder = Path(path + ".q")
    folder.mkdir()
    producer = _Producer(engine, path, durability)
    with producer.launched():
        producer.enqueue_many(jobs)
        with _consumers(engine, path, durability, folder, consumers, (most, per)) as procs:
            go = producer.go(folder, (most, per))
            done = _wait_drained(path, engine, procs)
    per_process, _ = _read_starts(folder, consumers, procs)
    stamps = sorted(t for starts in per_process for t in starts.values())
    if len(stamps) != jobs:
        raise RuntimeError(f"{len(stamps)} starts recorded for {jobs} workflows")
    first = stamps[0]
    dequeued = _dequeue_instants(path, engine)
    # Fixed windows from the first dequeue the engine recorded: a start is stamped a few ms
    # after its dequeue, so windows anchored at the first *start* would split a batch whose
    # starts lag less than the first one's did.
    anchor = min(dequeued[0], first) if dequeued else first
    windows: dict[int, int] = {}
    for t in stamps:
        windows[int((t - anchor) // per)] = windows.get(int((t - anchor) // per), 0) + 1
    counts = [windows.get(k, 0) for k in range(max(windows) + 1)]
    return {"max_per_window": max(counts), "mean_per_window": jobs / len(counts),
            "windows": counts, "rolling_max": _rolling_max(stamps, per),
            "rolling_max_dequeued": _rolling_max(dequeued, per) if dequeued else None,
            "start_lag_p50_s": _quantile(sorted(
                s - d for s, d in zip(stamps, dequeued, strict=False)), 0.5)
            if len(dequeued) == len(stamps) else None,
            "span_s": stamps[-1] - first, "ideal_span_s": (jobs / most - 1) * per,
            "total_s": done - go, "first_start_s": first - go,
            "split": [len(s) for s in per_process]}


if __name__ == "__main__" and len(sys.argv) == 8 and sys.argv[1] == "consumer":
    _engine, _path, _durability, _folder, _index, _rate = sys.argv[2:]
    _most_per = None if _rate == "-" else (int(_rate.split(",")[0]), float(_rate.split(",")[1]))
    _profile_dir = os.environ.get(PROFILE_ENV)
    if _profile_dir:  # cProfile every thread of this consumer (figures are then slower)
        from harness import _ThreadProfiler

        with _ThreadProfiler() as _profiler:
            _consumer(_engine, _path, _durability, Path(_folder), int(_index), _most_per)
        _profiler.dump(os.path.join(_profile_dir, f"consumer-{_engine}-{os.getpid()}.pstats"))
    else:
        _consumer(_engine, _path, _durability, Path(_folder), int(_index), _most_per)
