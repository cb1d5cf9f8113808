"""The same workloads on DBOS Transact (Python) with its SQLite system database (peer mode).

Only ``run.py --peer dbos`` uses this module, and only when ``import dbos`` works; it is never
needed by the tests or CI. ``dbos`` is imported inside each function, so the runner's parent
process (which forks every measurement) never carries DBOS's memory or threads. DBOS is a
process-wide singleton; each workload runs in its own forked child, registers its functions,
launches, measures and destroys it.

The mapping onto DBOS's API: a step is ``@DBOS.step()``; ``go`` is a child workflow started
with ``DBOS.start_workflow`` (DBOS's way to run work concurrently inside a workflow); ``select``
is ``DBOS.wait_first`` over workflow handles (journaled as a step); ``as_completed`` is
``wait_first`` over the handles not yet returned. Recovery is DBOS's own: ``DBOS.launch()``
recovers the pending workflows of executor ``local``.

Durability: the runner puts DBOS's SQLite file in WAL mode with ``synchronous=FULL`` or
``NORMAL`` to match litedurable's setting (DBOS's default is a rollback journal, whose commits
cost more), so the comparison is engine against engine on the same SQLite configuration.

Run as a script, this is the victim of workload (d) for DBOS, as ``ld_workloads.py`` is for
litedurable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import apsw
from ld_workloads import (
    FloorCommitter,
    RawCommitter,
    interleave,
    kill_when_recorded,
    one_way_summary,
    stream_summary,
    wait_until_none_pending,
)

SQLITE_NOTE = "WAL with synchronous matching durability, set by the runner"
RECOVERY_VERSION = "bench-recovery"
POLL_S = 0.005
"""DBOS on SQLite has no LISTEN/NOTIFY: recv, get_event and read_stream are woken by a thread
polling every ``notification_listener_polling_interval_sec`` (1 s by default). The message
and stream workloads set it to litedurable's commit-watch interval (``WATCH_INTERVAL``)."""


def _configure_sqlite(durability: str) -> None:
    """Every SQLAlchemy SQLite connection opened from now on: WAL and the chosen synchronous."""
    import sqlalchemy as sa

    sync = "FULL" if durability == "full" else "NORMAL"

    def pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute(f"PRAGMA synchronous={sync}")

    sa.event.listen(sa.engine.Engine, "connect", pragmas)


@contextmanager
def _launched(path: str, durability: str, version: str | None = None,
              poll_s: float | None = None) -> Iterator[Any]:
    """DBOS launched on the SQLite file ``path`` (or the PostgreSQL DSN ``path``, for
    ``run.py --backend postgres``); functions must be registered before."""
    import logging

    from dbos import DBOS

    if path.startswith("postgresql://"):  # run.py --backend postgres: a fresh database
        url = path  # synchronous_commit: the server's (on); the runner runs "full" only
    else:
        _configure_sqlite(durability)
        url = f"sqlite:///{path}"
    config: dict[str, Any] = {"name": "ldbench", "system_database_url": url,
                              "log_level": "WARNING", "run_admin_server": False}
    if version is not None:
        config["application_version"] = version
    if poll_s is not None:
        config["notification_listener_polling_interval_sec"] = poll_s
    DBOS(config=config)  # type: ignore[arg-type]
    logging.getLogger("dbos").setLevel(logging.WARNING)
    DBOS.launch()
    try:
        yield DBOS
    finally:
        DBOS.destroy(workflow_completion_timeout_sec=0)


# -- (a) sequential steps --------------------------------------------------------------------


def sequential_steps(path: str, durability: str, n: int) -> float:
    """(a) Seconds per step of one workflow of ``n`` trivial steps (see ld_workloads)."""
    from dbos import DBOS

    @DBOS.step()
    def inc(i: int) -> int:
        return i + 1

    @DBOS.workflow()
    def chain(count: int) -> int:
        value = 0
        for _ in range(count):
            value = inc(value)
        return value

    with _launched(path, durability):
        start = time.perf_counter()
        assert chain(n) == n
        return (time.perf_counter() - start) / n


def sequential_steps_interleaved(path: str, durability: str, n: int,
                                 chunk: int = 100) -> dict[str, float]:
    """(a) As ``ld_workloads.sequential_steps_interleaved``: floor and raw commits every
    ``chunk`` steps, the three taking turns going first."""
    from dbos import DBOS

    raw = RawCommitter(path + ".raw", durability)
    floor = FloorCommitter(path + ".floor", durability)

    @DBOS.step()
    def inc(i: int) -> int:
        return i + 1

    @DBOS.workflow()
    def chain(count: int, every: int) -> list[float]:
        value = 0

        def steps(size: int) -> float:
            nonlocal value
            start = time.perf_counter()
            for _ in range(size):
                value = inc(value)
            return time.perf_counter() - start

        spent = interleave((steps, floor.commit, raw.commit), count, every)
        assert value == count
        return spent

    with _launched(path, durability):
        start = time.perf_counter()
        step_s, floor_s, raw_s = chain(n, chunk)
        wall = time.perf_counter() - start - floor_s - raw_s
    raw.close()
    floor.close()
    return {"per_step_s": step_s / n, "floor_s": floor_s / n, "raw_s": raw_s / n,
            "wall_per_step_s": wall / n}


# -- (b) many small workflows ----------------------------------------------------------------


def many_workflows(path: str, durability: str, n: int, clients: int) -> float:
    """(b) Workflows per second: ``n`` three-step workflows started by ``clients`` threads."""
    from dbos import DBOS

    @DBOS.step()
    def inc(i: int) -> int:
        return i + 1

    @DBOS.workflow()
    def three(x: int) -> int:
        return inc(inc(inc(x)))

    with _launched(path, durability):

        def client(k: int) -> None:
            handles = [DBOS.start_workflow(three, i) for i in range(k, n, clients)]
            for i, h in zip(range(k, n, clients), handles, strict=True):
                assert h.get_result() == i + 3

        start = time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return n / (time.perf_counter() - start)


# -- (c) fan-out ------------------------------------------------------------------------------


def fan_out(path: str, durability: str, n: int, step_seconds: float) -> float:
    """(c) Wall seconds for ``n`` concurrent steps of ``step_seconds`` (child workflows)."""
    from dbos import DBOS

    @DBOS.step()
    def work(i: int) -> int:
        time.sleep(step_seconds)
        return i

    @DBOS.workflow()
    def one(i: int) -> int:
        return work(i)

    @DBOS.workflow()
    def fan(count: int) -> int:
        handles = [DBOS.start_workflow(one, i) for i in range(count)]
        return sum(h.get_result() for h in handles)

    with _launched(path, durability):
        start = time.perf_counter()
        assert fan(n) == n * (n - 1) // 2
        return time.perf_counter() - start


# -- (d) crash and recovery -----------------------------------------------------------------


def _register_recovery(steps: int, on_body: Callable[[int], None]) -> Callable[[int], int]:
    """Register workload (d)'s workflow (explicit names, so victim and recoverer agree)."""
    from dbos import DBOS

    @DBOS.step(name="bench_recovery_step")
    def step(value: int, k: int) -> int:
        on_body(k)
        return value + 1

    @DBOS.workflow(name="bench_recovery_workflow")
    def ten_steps(start: int) -> int:
        value = start
        for k in range(steps):
            value = step(value, k)
        return value

    return ten_steps


def _victim(path: str, durability: str, n: int, steps: int, done: int) -> None:
    """Start ``n`` workflows, let each record ``done`` steps, hang in the next until killed."""
    from dbos import DBOS, SetWorkflowID

    threading.stack_size(256 * 1024)
    forever = threading.Event()

    def on_body(k: int) -> None:
        if k >= done:
            forever.wait(600)

    wf = _register_recovery(steps, on_body)
    with _launched(path, durability, RECOVERY_VERSION):
        for i in range(n):
            with SetWorkflowID(f"wf-{i}"):
                DBOS.start_workflow(wf, i)
        forever.wait(600)
        os._exit(3)


def _count_steps(conn: apsw.Connection) -> int:
    return int(conn.execute(  # type: ignore[arg-type]
        "SELECT count(*) FROM operation_outputs WHERE function_name = 'bench_recovery_step'"
    ).fetchall()[0][0])


def prepare_crashed(path: str, durability: str, n: int, steps: int, done: int,
                    timeout: float = 1800.0) -> dict[str, float]:
    """Leave ``path`` as a DBOS process killed half-way (see ``ld_workloads.prepare_crashed``)."""
    cmd = [sys.executable, os.path.abspath(__file__), "victim", path, durability, str(n),
           str(steps), str(done)]
    return kill_when_recorded(cmd, path, n * done, _count_steps, timeout, "the DBOS victim")


def recover_crashed(path: str, durability: str, n: int, steps: int,
                    done: int) -> dict[str, float]:
    """(d) DBOS's launch-time recovery of the killed process's workflows, to completion.

    Timed as for litedurable: from before launch until no workflow is pending, watched through
    a connection of the benchmark's own.
    """
    from dbos import DBOS

    first: list[float] = []
    reran = [0]
    lock = threading.Lock()

    def on_body(k: int) -> None:
        with lock:
            if not first:
                first.append(time.perf_counter())
            if k < done:
                reran[0] += 1

    _register_recovery(steps, on_body)
    watcher = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    start = time.perf_counter()
    with _launched(path, durability, RECOVERY_VERSION):
        wait_until_none_pending(
            watcher, "SELECT count(*) FROM workflow_status WHERE status IN ('PENDING', 'ENQUEUED')")
        elapsed = time.perf_counter() - start
        for i in range(n):  # outside the clock
            assert DBOS.retrieve_workflow(f"wf-{i}").get_result() == i + steps
    watcher.close()
    return {"per_s": n / elapsed, "first_step_s": (first[0] - start) if first else float("nan"),
            "reran": reran[0]}


# -- (e) a big journal ----------------------------------------------------------------------


def fill_journal(path: str, rows: int, steps_per_workflow: int = 10) -> int:
    """Grow DBOS's system database by ``rows`` step rows of finished workflows, fast.

    One real workflow runs through DBOS as the template; its ``workflow_status`` row and its
    ``operation_outputs`` rows are cloned under fresh uuid4 ids in one transaction (every
    column copied as DBOS wrote it). Returns the step rows now in the file.
    """
    from dbos import DBOS

    @DBOS.step()
    def filler_step(i: int) -> int:
        return i + 1

    @DBOS.workflow()
    def filler(count: int) -> int:
        value = 0
        for _ in range(count):
            value = filler_step(value)
        return value

    with _launched(path, "normal"):
        handle = DBOS.start_workflow(filler, steps_per_workflow)
        handle.get_result()
        template = handle.workflow_id
    conn = apsw.Connection(path)
    conn.setbusytimeout(30_000)
    ids = sorted(str(uuid.uuid4()) for _ in range(-(-rows // steps_per_workflow)))
    for table in ("workflow_status", "operation_outputs"):
        cols = [str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")
                if r[1] != "workflow_uuid"]
        listed = ", ".join(f'"{c}"' for c in cols)
        sql = (f"INSERT INTO {table} (workflow_uuid, {listed}) "
               f"SELECT ?, {listed} FROM {table} WHERE workflow_uuid = ?")
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, ((wid, template) for wid in ids))
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    total = int(conn.execute(  # type: ignore[arg-type]
        "SELECT count(*) FROM operation_outputs").fetchall()[0][0])
    conn.close()
    return total


# -- (f) select and as_completed --------------------------------------------------------------


def select_overhead(path: str, durability: str, futures: int, rounds: int) -> dict[str, float]:
    """(f) Seconds per ``DBOS.wait_first`` over ``futures`` finished child workflows."""
    from dbos import DBOS

    @DBOS.step()
    def noop(i: int) -> int:
        return i

    @DBOS.workflow()
    def child(i: int) -> int:
        return noop(i)

    @DBOS.workflow()
    def selects(count: int, times: int) -> list[float]:
        begin = time.perf_counter()
        handles = [DBOS.start_workflow(child, i) for i in range(count)]
        for h in handles:
            h.get_result()
        started = time.perf_counter()
        for _ in range(times):
            DBOS.wait_first(handles)
        return [started - begin, time.perf_counter() - started]

    with _launched(path, durability):
        go_s, select_s = selects(futures, rounds)
    return {"per_select_s": select_s / rounds, "go_per_step_s": go_s / futures}


def as_completed_overhead(path: str, durability: str, futures: int) -> dict[str, float]:
    """(f) Seconds per completion-order yield: ``wait_first`` over the handles left."""
    from dbos import DBOS

    @DBOS.step()
    def noop(i: int) -> int:
        return i

    @DBOS.workflow()
    def child(i: int) -> int:
        return noop(i)

    @DBOS.workflow()
    def drain(count: int) -> list[float]:
        begin = time.perf_counter()
        handles = [DBOS.start_workflow(child, i) for i in range(count)]
        for h in handles:
            h.get_result()
        started = time.perf_counter()
        remaining = list(handles)
        while remaining:
            chosen = DBOS.wait_first(remaining)
            remaining = [h for h in remaining if h.workflow_id != chosen.workflow_id]
        return [started - begin, time.perf_counter() - started]

    with _launched(path, durability):
        go_s, drain_s = drain(futures)
    return {"per_yield_s": drain_s / futures, "go_per_step_s": go_s / futures}


# -- messages and streams (issue 14) --------------------------------------------------------
#
# As in ld_workloads: stamps in the workflow bodies (``setdefault``), ``time.monotonic()``
# compared across processes, the side process's stamps handed over in a JSON file. Each
# process gets an executor id of its own (``DBOS__VMID``), so neither recovers the other's
# pending workflow at launch.

PING, PONG, STREAMER = "bench-ping", "bench-pong", "bench-streamer"


def _register_pingpong(stamps: dict[str, float]) -> tuple[Any, Any]:
    from dbos import DBOS

    @DBOS.workflow(name="bench_ping")
    def ping(n: int) -> int:
        for i in range(n):
            stamps.setdefault(f"sent:{2 * i}", time.monotonic())
            DBOS.send(PONG, 2 * i)
            got = DBOS.recv(timeout_seconds=600)
            stamps.setdefault(f"got:{got}", time.monotonic())
        return n

    @DBOS.workflow(name="bench_pong")
    def pong(n: int) -> int:
        for _ in range(n):
            got = DBOS.recv(timeout_seconds=600)
            now = time.monotonic()
            stamps.setdefault(f"got:{got}", now)
            stamps.setdefault(f"sent:{got + 1}", now)
            DBOS.send(PING, got + 1)
        return n

    return ping, pong


def _side(role: str, path: str, durability: str, n: int, out: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DBOS__VMID": f"bench-{role}"}
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), role, path, durability,
                             str(n), out], env=env)


def _wait_exists(dbos: Any, workflow_id: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while not dbos.list_workflows(workflow_ids=[workflow_id]):
        if proc.poll() is not None:
            raise RuntimeError(f"the DBOS side process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"workflow {workflow_id} never appeared")
        time.sleep(0.005)


def _read_stamps(proc: subprocess.Popen[bytes], out: str) -> dict[str, float]:
    if proc.wait(600) != 0:
        raise RuntimeError(f"the DBOS side process exited with {proc.returncode}")
    with open(out) as f:
        return dict(json.load(f))


def pingpong(path: str, durability: str, n: int, cross_process: bool = False
             ) -> dict[str, float]:
    """Issue 14's ping-pong with ``DBOS.send``/``DBOS.recv`` (see ``ld_workloads.pingpong``)."""
    from dbos import DBOS, SetWorkflowID

    stamps: dict[str, float] = {}
    ping, pong = _register_pingpong(stamps)
    proc = None
    if cross_process:
        os.environ["DBOS__VMID"] = "bench-ping"
    with _launched(path, durability, poll_s=POLL_S) as dbos:
        if cross_process:
            out = path + ".stamps.json"
            proc = _side("pong", path, durability, n, out)
            _wait_exists(dbos, PONG, proc)
        else:
            with SetWorkflowID(PONG):
                pong_handle = DBOS.start_workflow(pong, n)
        start = time.perf_counter()
        with SetWorkflowID(PING):
            handle = DBOS.start_workflow(ping, n)
        assert handle.get_result() == n
        elapsed = time.perf_counter() - start
        if proc is not None:
            stamps.update(_read_stamps(proc, out))
        else:
            assert pong_handle.get_result() == n
    return {"per_s": n / elapsed, **one_way_summary(stamps, 2 * n)}


def _pong_process(path: str, durability: str, n: int, out: str) -> None:
    from dbos import DBOS, SetWorkflowID

    stamps: dict[str, float] = {}
    _, pong = _register_pingpong(stamps)
    with _launched(path, durability, poll_s=POLL_S):
        with SetWorkflowID(PONG):
            handle = DBOS.start_workflow(pong, n)
        assert handle.get_result() == n
    with open(out, "w") as f:
        json.dump(stamps, f)


def stream_throughput(path: str, durability: str, n: int) -> dict[str, float]:
    """Issue 14's stream workload with ``DBOS.write_stream``/``read_stream``: the writer in a
    second process, this one reading live (polling every ``POLL_S``)."""
    from dbos import DBOS

    out = path + ".stamps.json"
    read: list[float] = []
    os.environ["DBOS__VMID"] = "bench-reader"
    with _launched(path, durability, poll_s=POLL_S) as dbos:
        proc = _side("streamer", path, durability, n, out)
        _wait_exists(dbos, STREAMER, proc)
        DBOS.send(STREAMER, "go")
        for i, value in enumerate(DBOS.read_stream(STREAMER, "values",
                                                   polling_interval_sec=POLL_S,
                                                   timeout_seconds=600)):
            read.append(time.monotonic())
            assert value == i
        assert len(read) == n
        written = _read_stamps(proc, out)
    return stream_summary(written, read, n)


def _streamer_process(path: str, durability: str, n: int, out: str) -> None:
    from dbos import DBOS, SetWorkflowID

    stamps: dict[str, float] = {}

    @DBOS.workflow(name="bench_streamer")
    def streamer(count: int) -> int:
        DBOS.recv(timeout_seconds=600)
        stamps.setdefault("start", time.monotonic())
        for i in range(count):
            DBOS.write_stream("values", i)
            stamps.setdefault(str(i), time.monotonic())
        DBOS.close_stream("values")
        return count

    with _launched(path, durability, poll_s=POLL_S):
        with SetWorkflowID(STREAMER):
            handle = DBOS.start_workflow(streamer, n)
        assert handle.get_result() == n
    with open(out, "w") as f:
        json.dump(stamps, f)


if __name__ == "__main__" and len(sys.argv) == 7 and sys.argv[1] == "victim":
    _victim(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
elif __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] in ("pong", "streamer"):
    side = _pong_process if sys.argv[1] == "pong" else _streamer_process
    side(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
