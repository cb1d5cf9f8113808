"""The workloads of issue 6 on litedurable, plus the raw SQLite baselines they are compared to.

Each function takes a fresh path and returns plain numbers; the runner (``run.py``) runs them in
forked children, takes medians and prints the JSON lines. Run as a script, this module is the
*victim* of workload (d): ``python ld_workloads.py victim PATH DURABILITY N STEPS DONE`` starts
``N`` workflows that each record ``DONE`` of their ``STEPS`` steps and then hang inside the
next one, until the runner SIGKILLs the process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import apsw

import litedurable as ld
from litedurable.testing import FakeClock

Durability = Any  # "full" | "normal"; the App checks it

# -- raw SQLite: the floor every step is measured against ----------------------------------------


def _raw_connection(path: str, durability: str) -> apsw.Connection:
    conn = apsw.Connection(path)
    conn.setbusytimeout(30_000)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
    return conn


def raw_commit_seconds(path: str, durability: str, n: int) -> float:
    """Seconds per single-row transaction with apsw alone, WAL mode: the floor for one step.

    One ``BEGIN IMMEDIATE; INSERT ~200-byte row; COMMIT`` at a time, as a journal that writes
    one row per step with no batching would. Every other figure is a ratio against this one,
    measured minutes apart on the same disk, so machine speed and load cancel out.
    """
    conn = _raw_connection(path, durability)
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


def raw_commit_threads_per_s(path: str, durability: str, n: int, threads: int) -> float:
    """Commits per second with ``threads`` threads, each on its own connection, contending.

    The limit a journal without group commit hits under concurrency (each transaction pays
    its own fsync and the write lock is handed around); issue 6 quotes ~2,500/s at FULL.
    """
    setup = _raw_connection(path, durability)
    setup.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
    setup.close()
    payload = os.urandom(200)
    conns = [_raw_connection(path, durability) for _ in range(threads)]

    def writer(conn: apsw.Connection, keys: range) -> None:
        for i in keys:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?, ?)", (i, payload))
            conn.execute("COMMIT")

    workers = [
        threading.Thread(target=writer, args=(conns[k], range(k, n, threads)))
        for k in range(threads)
    ]
    start = time.perf_counter()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    elapsed = time.perf_counter() - start
    for conn in conns:
        conn.close()
    return n / elapsed


class RawCommitter:
    """Raw single-row commits on a file of its own, callable between a workflow's steps.

    Used to interleave the baseline with the workload at a fine grain: on a shared machine
    fsync latency changes from second to second, so a baseline measured a minute (or even a
    few seconds) apart can be off by 2x either way, while chunks of 100 raw commits alternating
    with chunks of 100 steps see the same disk.
    """

    def __init__(self, path: str, durability: str) -> None:
        self.conn = _raw_connection(path, durability)
        self.conn.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v BLOB)")
        self.payload = os.urandom(200)
        self.next = 0

    def commit(self, count: int) -> float:
        """Seconds spent on ``count`` single-row transactions."""
        conn, payload = self.conn, self.payload
        start = time.perf_counter()
        for _ in range(count):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?, ?)", (self.next, payload))
            conn.execute("COMMIT")
            self.next += 1
        return time.perf_counter() - start

    def close(self) -> None:
        self.conn.close()


def interleave(turns: Sequence[Callable[[int], float]], count: int, every: int) -> list[float]:
    """Seconds each of ``turns`` spent doing ``count`` units, ``every`` at a time, in rotation.

    The first turn of each chunk rotates, so no turn always runs right after the same other
    one (a commit warms the caches the next one reads): load that changes from second to
    second is shared fairly among them.
    """
    spent = [0.0] * len(turns)
    for k, done in enumerate(range(0, count, every)):
        size = min(every, count - done)
        for j in range(len(turns)):
            which = (k + j) % len(turns)
            spent[which] += turns[which](size)
    return spent


class FloorCommitter:
    """The floor of (a): the leanest durable record a step could be, one commit per step.

    A small row shaped like a step row (workflow id text, step number, an 8-byte output blob)
    in a ``WITHOUT ROWID`` table keyed by ``(workflow_id, step)``, as the journal's ``steps``
    table is, written by one ``INSERT`` in autocommit mode (its own transaction: no ``BEGIN``
    or ``COMMIT`` round trips, as the journal writes a lone step row), WAL mode, on a file of
    its own with the durability's ``synchronous`` setting. No fence, no checksum, no other
    column: everything a step does beyond this is engine overhead.
    """

    def __init__(self, path: str, durability: str) -> None:
        self.conn = _raw_connection(path, durability)
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS steps (workflow_id TEXT NOT NULL, step INTEGER NOT NULL, "
            "output BLOB, PRIMARY KEY (workflow_id, step)) WITHOUT ROWID"
        )
        self.workflow_id = str(uuid.uuid4())
        self.output = os.urandom(8)
        self.next = 0

    def commit(self, count: int) -> float:
        """Seconds spent on ``count`` single-row autocommit inserts."""
        conn, wid, output = self.conn, self.workflow_id, self.output
        start = time.perf_counter()
        for _ in range(count):
            conn.execute("INSERT INTO steps VALUES (?, ?, ?)", (wid, self.next, output))
            self.next += 1
        return time.perf_counter() - start

    def close(self) -> None:
        self.conn.close()


# -- (a) sequential steps --------------------------------------------------------------------


def sequential_steps(path: str, durability: Durability, n: int) -> float:
    """Seconds per step of one workflow running ``n`` trivial steps in a row, end to end.

    Nothing overlaps, so each step pays its full journal write (one commit, one fsync at
    FULL). The runner's (a) uses ``sequential_steps_interleaved`` (same workflow, baseline
    interleaved); this plain form serves the big-journal comparison of peers that cannot
    open two journals in one process.
    """
    app = ld.App(path, durability=durability)

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


def sequential_steps_interleaved(path: str, durability: Durability, n: int,
                                 chunk: int = 100) -> dict[str, float]:
    """(a) One workflow of ``n`` trivial steps, with the baselines interleaved every ``chunk``.

    Between chunks of ``chunk`` steps the workflow thread itself makes ``chunk`` floor
    commits (``FloorCommitter``) and ``chunk`` raw commits (``RawCommitter``), each on a file
    of its own (plain benchmark code, not journaled), so the step time and its baselines are
    measured on the same disk within the same second; the three take turns going first, so
    none always follows the same one. All clocks run inside the workflow. Returns seconds per
    step, per floor commit, per raw commit, and the end-to-end wall time per step (start to
    result, baseline chunks excluded).
    """
    raw = RawCommitter(path + ".raw", durability)
    floor = FloorCommitter(path + ".floor", durability)
    app = ld.App(path, durability=durability)

    @app.step()
    def inc(i: int) -> int:
        return i + 1

    @app.workflow()
    def chain(count: int, every: int) -> list[float]:
        value = 0

        def steps(size: int) -> float:
            nonlocal value
            start = time.perf_counter()
            for _ in range(size):
                value = inc(value)
            return time.perf_counter() - start

        # benchmark-only: this workflow never replays, so its clocks need not be recorded
        spent = interleave((steps, floor.commit, raw.commit), count, every)
        assert value == count
        return spent

    with app:
        start = time.perf_counter()
        step_s, floor_s, raw_s = app.run(chain, n, chunk)
        wall = time.perf_counter() - start - floor_s - raw_s
    raw.close()
    floor.close()
    return {"per_step_s": step_s / n, "floor_s": floor_s / n, "raw_s": raw_s / n,
            "wall_per_step_s": wall / n}


# -- (b) many small workflows ----------------------------------------------------------------


def many_workflows(path: str, durability: Durability, n: int, clients: int) -> float:
    """(b) Workflows per second: ``n`` three-step workflows started by ``clients`` threads.

    Each client starts its share and waits for every result. With one client the workflows
    still run concurrently on the App's threads, so the journal sees many writers at once:
    this is where group commit must beat one fsync per write.
    """
    app = ld.App(path, durability=durability)

    @app.step()
    def inc(i: int) -> int:
        return i + 1

    @app.workflow()
    def three(x: int) -> int:
        return inc(inc(inc(x)))

    with app:

        def client(k: int) -> None:
            handles = [app.start(three, i) for i in range(k, n, clients)]
            for i, h in zip(range(k, n, clients), handles, strict=True):
                assert h.result() == i + 3

        start = time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return n / (time.perf_counter() - start)


# -- (c) fan-out ------------------------------------------------------------------------------


def fan_out(path: str, durability: Durability, n: int, step_seconds: float,
            workers: int | None = None, warm: bool = False) -> float:
    """(c) Wall seconds for ``n`` concurrent ``go`` steps of ``step_seconds`` each, wait_all'ed.

    The ideal is one step's duration (they all overlap); the excess is thread start-up, the
    ``n`` journal writes and waking the workflow, with default App settings unless ``workers``
    is given (the default pool runs 100 steps in one wave). ``warm`` times a second
    fan-out in the same App, its threads already started: the engine's own overhead.
    """
    app = ld.App(path, durability=durability, **({} if workers is None else {"workers": workers}))

    @app.step()
    def work(i: int) -> int:
        time.sleep(step_seconds)
        return i

    @app.workflow()
    def fan(count: int) -> int:
        return sum(ld.wait_all([ld.go(work, i) for i in range(count)]))

    with app:
        if warm:
            app.run(fan, n)
        start = time.perf_counter()
        assert app.run(fan, n) == n * (n - 1) // 2
        return time.perf_counter() - start


def plain_threads(n: int, step_seconds: float) -> float:
    """(c)'s floor on this machine: wall seconds to start ``n`` plain threads that each sleep
    ``step_seconds``, and join them. No engine can fan out to ``n`` new threads faster; a
    cold fan-out pays this, a warm one (threads already started) does not."""
    start = time.perf_counter()
    threads = [threading.Thread(target=time.sleep, args=(step_seconds,)) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


# -- (d) crash and recovery -----------------------------------------------------------------

RECOVERY_VERSION = "bench-recovery"


def recovery_app(
    path: str,
    durability: Durability,
    *,
    steps: int,
    on_body: Callable[[int], None],
    workflow_threads: int = 64,
) -> tuple[ld.App, Callable[[int], int]]:
    """The App of workload (d): a workflow of ``steps`` sequential steps.

    ``on_body(k)`` runs at the start of every step body that actually executes (replayed steps
    run no body). The victim uses it to hang at step ``DONE``; the recovering App to time the
    first resumed step and to count recorded steps that ran again (there should be none).
    Names and version are explicit so the victim and the recovering process agree on them.
    """
    app = ld.App(path, durability=durability, app_version=RECOVERY_VERSION,
                 workflow_threads=workflow_threads)

    @app.step(name="bench_recovery_step")
    def step(value: int, k: int) -> int:
        on_body(k)
        return value + 1

    @app.workflow(name="bench_recovery_workflow")
    def ten_steps(start: int) -> int:
        value = start
        for k in range(steps):
            value = step(value, k)
        return value

    return app, ten_steps


def _victim(path: str, durability: str, n: int, steps: int, done: int) -> None:
    """Start ``n`` workflows, let each record ``done`` steps, hang in the next until killed."""
    threading.stack_size(256 * 1024)  # one run thread per workflow, so all reach step DONE
    forever = threading.Event()

    def on_body(k: int) -> None:
        if k >= done:
            forever.wait(600)  # the runner SIGKILLs us long before; never outlive it by much

    app, wf = recovery_app(path, durability, steps=steps, on_body=on_body, workflow_threads=n)
    app.launch()
    for i in range(n):
        # workflow_id= is consumed by start(); its ParamSpec signature does not declare it
        app.start(wf, i, workflow_id=f"wf-{i}")  # type: ignore[call-arg]
    forever.wait(600)
    os._exit(3)


def _count_steps(conn: apsw.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM steps").fetchall()[0][0])  # type: ignore[arg-type]


def prepare_crashed(path: str, durability: str, n: int, steps: int, done: int,
                    timeout: float = 600.0) -> dict[str, float]:
    """Leave ``path`` as a process killed half-way: ``n`` workflows, ``done`` steps recorded each.

    A child Python process runs the victim; this one polls the file through its own read-only
    connection and SIGKILLs the child the moment ``n * done`` step rows are committed. Returns
    how long the victim took and the step rows found after the kill.
    """
    cmd = [sys.executable, os.path.abspath(__file__), "victim", path, durability, str(n),
           str(steps), str(done)]
    return kill_when_recorded(cmd, path, n * done, _count_steps, timeout, "the victim")


def kill_when_recorded(cmd: list[str], path: str, want: int,
                       count_steps: Callable[[apsw.Connection], int], timeout: float,
                       label: str) -> dict[str, float]:
    """Run ``cmd`` and SIGKILL it once ``count_steps`` finds ``want`` rows in ``path``.

    Polls through a read-only connection of this process's own; returns how long the victim
    ran and how many step rows the file holds after the kill.
    """
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errors)
        start = time.perf_counter()
        conn: apsw.Connection | None = None
        try:
            while True:
                if proc.poll() is not None:
                    errors.seek(0)
                    raise RuntimeError(f"{label} exited with {proc.returncode} before the "
                                       f"kill:\n{errors.read().decode(errors='replace')[-3000:]}")
                if time.perf_counter() - start > timeout:
                    raise TimeoutError(f"{label} did not record {want} steps in {timeout} s")
                try:
                    if conn is None:
                        conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
                        conn.setbusytimeout(5_000)
                    if count_steps(conn) >= want:
                        break
                except apsw.Error:  # file or schema not there yet
                    if conn is not None:
                        conn.close()
                    conn = None
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait()  # reaped: its pid is dead, so the next App takes its workflows at once
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        victim_s = time.perf_counter() - start
        assert conn is not None
        found = count_steps(conn)
        conn.close()
    return {"victim_s": victim_s, "step_rows": found}


def recover_crashed(path: str, durability: Durability, n: int, steps: int,
                    done: int) -> dict[str, float]:
    """(d) Recover the killed process's workflows in a fresh App and run them to completion.

    The clock starts before ``launch()`` (which finds the dead owner, claims its workflows and
    schedules them) and stops when the journal has no pending workflow left (watched through
    a connection of the benchmark's own); the results are checked after the clock stops.
    ``first_step_s`` is when the first step that had not been recorded began to run again.
    ``reran`` counts recorded steps whose bodies ran again (replay must make that zero).
    """
    first: list[float] = []
    reran = [0]
    lock = threading.Lock()

    def on_body(k: int) -> None:
        if not first:
            with lock:
                if not first:
                    first.append(time.perf_counter())
        if k < done:
            with lock:
                reran[0] += 1

    app, _ = recovery_app(path, durability, steps=steps, on_body=on_body)
    watcher = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    start = time.perf_counter()
    app.launch()
    try:
        wait_until_none_pending(watcher, "SELECT count(*) FROM workflows WHERE status = 'pending'")
        elapsed = time.perf_counter() - start
        for i in range(n):  # outside the clock: every workflow finished with the right result
            assert app.handle(f"wf-{i}").result(timeout=60) == i + steps
    finally:
        app.close()
        watcher.close()
    return {"per_s": n / elapsed, "first_step_s": (first[0] - start) if first else float("nan"),
            "reran": reran[0]}


def wait_until_none_pending(conn: apsw.Connection, count_sql: str, timeout: float = 600) -> None:
    """Poll ``count_sql`` on a connection of the benchmark's own until it reads 0.

    Completion is watched from outside the App: waiting on 1,000 handles would put 2,000
    reads on the App's own reader and measure the benchmark's polling along with the
    recovery. A WAL reader blocks no writer, so this watcher costs the engine nothing.
    """
    deadline = time.perf_counter() + timeout
    while int(conn.execute(count_sql).fetchall()[0][0]) > 0:  # type: ignore[arg-type]
        if time.perf_counter() > deadline:
            raise TimeoutError(f"workflows still pending after {timeout} s")
        time.sleep(0.002)


# -- (e) a big journal ----------------------------------------------------------------------


def _columns(conn: apsw.Connection, table: str) -> list[str]:
    return [str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")]


def filler(path: str, steps_per_workflow: int) -> tuple[ld.App, str]:
    """(e)'s filler App on ``path`` (closed) and the id of one real workflow of it, run to
    the end: the template a journal filler clones."""
    app = ld.App(path, durability="normal", app_version="bench-filler")

    @app.step(name="bench_filler_step")
    def filler_step(i: int) -> int:
        return i + 1

    @app.workflow(name="bench_filler_workflow")
    def fill(count: int) -> int:
        value = 0
        for _ in range(count):
            value = filler_step(value)
        return value

    with app:
        template = app.start(fill, steps_per_workflow)
        template.result()
    return app, template.workflow_id


def clone_ids(rows: int, steps_per_workflow: int) -> list[str]:
    """Fresh uuid4 ids for ``rows`` step rows' workflows, spread over the whole key space (as
    real ids are), sorted (as a bulk load goes fastest)."""
    return sorted(str(uuid.uuid4()) for _ in range(-(-rows // steps_per_workflow)))


def check_clones(app: ld.App, ids: list[str], steps_per_workflow: int) -> None:
    """A clone reads back through the engine, its checksums verified: a change of the
    journal's layout fails the filler, loudly."""
    with app:
        clone = app.steps(ids[len(ids) // 2])
        assert [s.output for s in clone] == list(range(1, steps_per_workflow + 1)), clone
        assert app.handle(ids[-1]).result() == steps_per_workflow


def fill_journal(path: str, rows: int, steps_per_workflow: int = 10) -> int:
    """Grow the journal at ``path`` by ``rows`` step rows of finished workflows, fast.

    Runs one real ``steps_per_workflow``-step workflow through the App as a template, then
    clones its workflow row and step rows under fresh ids in one apsw transaction, recomputing
    each row's checksum with the engine's own ``checksum``. Returns the step rows now in the
    file. (``pg.fill_journal`` is the same on PostgreSQL.)
    """
    from litedurable._storage import checksum  # the engine's own checksum; layout checked below

    app, template = filler(path, steps_per_workflow)
    conn = apsw.Connection(path)
    conn.setbusytimeout(30_000)
    wf_cols, step_cols = _columns(conn, "workflows"), _columns(conn, "steps")
    need_wf = {"workflow_id", "name", "inputs", "output", "error", "checksum"}
    need_step = {"workflow_id", "step", "kind", "name", "output", "error", "extra", "checksum"}
    if not need_wf <= set(wf_cols) or not need_step <= set(step_cols):
        raise RuntimeError(f"the journal layout changed ({wf_cols}; {step_cols}): update "
                           "benchmarks/ld_workloads.py:fill_journal")
    wf_row: dict[str, Any] = dict(zip(wf_cols, conn.execute(
        "SELECT * FROM workflows WHERE workflow_id = ?", (template,)
    ).fetchall()[0], strict=True))
    step_rows: list[dict[str, Any]] = [dict(zip(step_cols, r, strict=True)) for r in conn.execute(
        "SELECT * FROM steps WHERE workflow_id = ? ORDER BY step", (template,))]
    ids = clone_ids(rows, steps_per_workflow)
    wf_sql = (f"INSERT INTO workflows ({', '.join(wf_cols)}) "
              f"VALUES ({', '.join('?' * len(wf_cols))})")
    step_sql = (f"INSERT INTO steps ({', '.join(step_cols)}) "
                f"VALUES ({', '.join('?' * len(step_cols))})")
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(wf_sql, (tuple(r[c] for c in wf_cols)
                              for r in clone_workflow_rows(wf_row, ids, checksum)))
    conn.executemany(step_sql, (tuple(r[c] for c in step_cols)
                                for r in clone_step_rows(step_rows, ids, checksum)))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    total = _count_steps(conn)
    conn.close()
    check_clones(app, ids, steps_per_workflow)
    return total


def clone_workflow_rows(template: dict[str, Any], ids: list[str],
                        checksum: Callable[..., int]) -> Iterator[dict[str, Any]]:
    """``template`` (a workflow row by column) under each id, its checksum recomputed."""
    for wid in ids:
        row = {**template, "workflow_id": wid}
        row["checksum"] = checksum(wid, row["name"], row["inputs"], row["output"], row["error"])
        yield row


def clone_step_rows(template: list[dict[str, Any]], ids: list[str],
                    checksum: Callable[..., int]) -> Iterator[dict[str, Any]]:
    """``template`` (one workflow's step rows by column) under each id, checksums recomputed."""
    for wid in ids:
        for step in template:
            row = {**step, "workflow_id": wid}
            row["checksum"] = checksum(wid, str(row["step"]), row["kind"], row["name"],
                                       row["output"], row["error"], row["extra"])
            yield row


def big_vs_empty(big: str, empty: str, durability: Durability, n: int,
                 chunk: int = 100) -> dict[str, float]:
    """(e) Seconds per step on the big journal and on an empty one, measured alternately.

    Two Apps live in this process, one per file; workflows of ``chunk`` sequential steps run
    on each in turn (which one goes first alternates), ``n`` steps on each in all, so both
    journals see the same disk and the same load within the same second.
    """

    def chain_on(app: ld.App) -> Callable[[int], int]:
        @app.step()
        def inc(i: int) -> int:
            return i + 1

        @app.workflow()
        def chain(count: int) -> int:
            value = 0
            for _ in range(count):
                value = inc(value)
            return value

        return chain

    chunk = min(chunk, n)
    apps = [ld.App(big, durability=durability), ld.App(empty, durability=durability)]
    flows = [chain_on(app) for app in apps]
    spent = [0.0, 0.0]
    for app in apps:
        app.launch()
    try:
        for r in range(max(1, n // chunk)):
            for k in (0, 1) if r % 2 == 0 else (1, 0):
                start = time.perf_counter()
                assert apps[k].run(flows[k], chunk) == chunk
                spent[k] += time.perf_counter() - start
    finally:
        for app in apps:
            app.close()
    steps = max(1, n // chunk) * chunk
    return {"big_per_step_s": spent[0] / steps, "empty_per_step_s": spent[1] / steps}


# -- (f) select and as_completed --------------------------------------------------------------


def select_overhead(path: str, durability: Durability, futures: int,
                    rounds: int) -> dict[str, float]:
    """(f) Seconds per ``select`` over ``futures`` settled futures.

    The workflow starts ``futures`` trivial ``go`` steps, waits for all, then calls
    ``select`` over the whole list ``rounds`` times. Every candidate is settled, so nothing is
    waited for: the figure is the decision itself (scanning the candidates, journaling the
    candidate list and the winner: one commit). The clock is read inside the workflow; that
    is benchmark-only code that never replays.
    """
    app = ld.App(path, durability=durability)

    @app.step()
    def noop(i: int) -> int:
        return i

    @app.workflow()
    def selects(count: int, times: int) -> list[float]:
        begin = time.perf_counter()
        futs = [ld.go(noop, i) for i in range(count)]
        ld.wait_all(futs)
        started = time.perf_counter()
        for _ in range(times):
            assert ld.select(futs) is futs[0]
        return [started - begin, time.perf_counter() - started]

    with app:
        go_s, select_s = app.run(selects, futures, rounds)
    return {"per_select_s": select_s / rounds, "go_per_step_s": go_s / futures}


def as_completed_overhead(path: str, durability: Durability, futures: int) -> dict[str, float]:
    """(f) Seconds per ``as_completed`` yield over ``futures`` settled futures.

    As for ``select``, the futures are all settled first, so each yield is one durable
    decision over the futures not yet yielded (1,000 down to 1 candidates, one commit each).
    """
    app = ld.App(path, durability=durability)

    @app.step()
    def noop(i: int) -> int:
        return i

    @app.workflow()
    def drain(count: int) -> list[float]:
        begin = time.perf_counter()
        futs = [ld.go(noop, i) for i in range(count)]
        ld.wait_all(futs)
        started = time.perf_counter()
        seen = sum(1 for _ in ld.as_completed(futs))
        assert seen == count
        return [started - begin, time.perf_counter() - started]

    with app:
        go_s, drain_s = app.run(drain, futures)
    return {"per_yield_s": drain_s / futures, "go_per_step_s": go_s / futures}


# -- sleeping workflows -------------------------------------------------------------------------


def sleeping_threads(path: str, n: int) -> dict[str, float]:
    """Threads alive while ``n`` workflows sleep durably, and the time to wake them all.

    A sleeping workflow must not hold a thread (issue 6's "no polling in-process"), so the
    thread count should stay near the pool floor however many workflows sleep.
    """
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
        return {"threads_peak": peak, "wake_all_s": time.perf_counter() - start}


# -- messages and streams (issue 14) --------------------------------------------------------
#
# Latency is measured with time stamps taken in the workflow bodies and kept in a dict of the
# process (``setdefault``: a replay never overwrites the live stamp). ``time.monotonic()`` is
# one system-wide clock on Linux and macOS, so stamps of two processes compare directly; the
# side process writes its stamps to a JSON file for the measuring one.

PING, PONG, STREAMER = "bench-ping", "bench-pong", "bench-streamer"


def one_way_summary(stamps: dict[str, float], messages: int) -> dict[str, float]:
    """p50/p95 seconds from ``sent:k`` (before the send) to ``got:k`` (recv returned)."""
    lat = sorted(stamps[f"got:{k}"] - stamps[f"sent:{k}"] for k in range(messages))
    return {"p50_s": lat[len(lat) // 2], "p95_s": lat[max(0, -(-len(lat) * 95 // 100) - 1)]}


def _pingpong_app(path: str, durability: Durability, stamps: dict[str, float]
                  ) -> tuple[ld.App, Any, Any]:
    app = ld.App(path, durability=durability)

    @app.workflow(name="bench_ping")
    def ping(n: int) -> int:
        for i in range(n):
            stamps.setdefault(f"sent:{2 * i}", time.monotonic())
            ld.send(PONG, 2 * i)
            got = ld.recv()
            stamps.setdefault(f"got:{got}", time.monotonic())
        return n

    @app.workflow(name="bench_pong")
    def pong(n: int) -> int:
        for _ in range(n):
            got = ld.recv()
            now = time.monotonic()
            stamps.setdefault(f"got:{got}", now)
            stamps.setdefault(f"sent:{got + 1}", now)
            ld.send(PING, got + 1)
        return n

    return app, ping, pong


def _side_process(role: str, path: str, durability: str, n: int, out: str) -> list[Any]:
    """Start ``python ld_workloads.py ROLE ...``: the other workflow of a cross-process pair."""
    return [sys.executable, os.path.abspath(__file__), role, path, durability, str(n), out]


def _wait_exists(app: ld.App, workflow_id: str, proc: subprocess.Popen[bytes],
                 timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            app.handle(workflow_id)
            return
        except ld.WorkflowNotFoundError:
            if proc.poll() is not None:
                raise RuntimeError(f"the side process exited with {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _read_stamps(proc: subprocess.Popen[bytes], out: str) -> dict[str, float]:
    if proc.wait(600) != 0:
        raise RuntimeError(f"the side process exited with {proc.returncode}")
    with open(out) as f:
        return dict(json.load(f))


def pingpong(path: str, durability: Durability, n: int,
             cross_process: bool = False) -> dict[str, float]:
    """Two workflows exchanging ``2n`` messages (``n`` round trips) with ``ld.send``/``recv``.

    In one App, or (``cross_process``) with the pong workflow in a second process on the same
    file. ``per_s`` is round trips per second, timed from the ping's start to its result;
    one-way latency runs from just before a send to the return of the matching recv (the
    send's commit, the wake-up, the receiver's consuming commit).
    """
    stamps: dict[str, float] = {}
    app, ping, pong = _pingpong_app(path, durability, stamps)
    proc = None
    with app:
        if cross_process:
            out = path + ".stamps.json"
            proc = subprocess.Popen(_side_process("pong", path, durability, n, out))
            _wait_exists(app, PONG, proc)
        else:
            app.start(pong, n, workflow_id=PONG)  # type: ignore[call-arg]
        start = time.perf_counter()
        handle = app.start(ping, n, workflow_id=PING)  # type: ignore[call-arg]
        assert handle.result(timeout=600) == n
        elapsed = time.perf_counter() - start
        if proc is not None:
            stamps.update(_read_stamps(proc, out))
        else:
            assert app.handle(PONG).result(timeout=60) == n
    return {"per_s": n / elapsed, **one_way_summary(stamps, 2 * n)}


def _pong_process(path: str, durability: str, n: int, out: str) -> None:
    stamps: dict[str, float] = {}
    app, _, pong = _pingpong_app(path, durability, stamps)
    with app:
        handle = app.start(pong, n, workflow_id=PONG)  # type: ignore[call-arg]
        assert handle.result(timeout=600) == n
    with open(out, "w") as f:
        json.dump(stamps, f)


def stream_summary(written: dict[str, float], read: list[float], n: int) -> dict[str, float]:
    """Values/s and end-to-end seconds (first write begun to last value read), and the p50
    lag of a value (its write committed to its read)."""
    end_to_end = read[-1] - written["start"]
    lag = sorted(read[i] - written[str(i)] for i in range(n))
    return {"per_s": n / end_to_end, "end_to_end_s": end_to_end,
            "lag_p50_s": lag[len(lag) // 2]}


def stream_throughput(path: str, durability: Durability, n: int) -> dict[str, float]:
    """A workflow in a second process writes ``n`` values with ``ld.write_stream``; this
    process reads them live with ``app.read_stream`` (the writer starts when the reader says
    go, so every value is read as it comes)."""
    out = path + ".stamps.json"
    read: list[float] = []
    with ld.App(path, durability=durability) as app:
        proc = subprocess.Popen(_side_process("streamer", path, durability, n, out))
        _wait_exists(app, STREAMER, proc)
        reader = app.read_stream(STREAMER, "values", timeout=600)
        app.send(STREAMER, "go")
        for i, value in enumerate(reader):
            read.append(time.monotonic())
            assert value == i
        assert len(read) == n
        written = _read_stamps(proc, out)
    return stream_summary(written, read, n)


def _streamer_process(path: str, durability: str, n: int, out: str) -> None:
    stamps: dict[str, float] = {}
    app = ld.App(path, durability=durability)

    @app.workflow(name="bench_streamer")
    def streamer(count: int) -> int:
        ld.recv(timeout=600)
        stamps.setdefault("start", time.monotonic())
        for i in range(count):
            ld.write_stream("values", i)
            stamps.setdefault(str(i), time.monotonic())
        ld.close_stream("values")
        return count

    with app:
        handle = app.start(streamer, n, workflow_id=STREAMER)  # type: ignore[call-arg]
        assert handle.result(timeout=600) == n
    with open(out, "w") as f:
        json.dump(stamps, f)


if __name__ == "__main__" and len(sys.argv) == 7 and sys.argv[1] == "victim":
    _victim(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
elif __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] in ("pong", "streamer"):
    side = _pong_process if sys.argv[1] == "pong" else _streamer_process
    side(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
