"""``run.py --backend postgres``: the same workloads on one local PostgreSQL server (issue 17).

One server serves the whole run: ``LITEDURABLE_BENCH_POSTGRES`` (a DSN of a database the
benchmark may create databases from, e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``)
or, when unset, a throwaway server started here from the machine's binaries
(``pg_config --bindir``: ``initdb`` + ``pg_ctl`` in a temporary directory on a free port, run
as the ``postgres`` user when we are root) with the server's default durability settings:
``fsync=on``, ``synchronous_commit=on``, ``full_page_writes=on``; only ``max_connections`` is
raised (every App and DBOS hold pools).

Every repetition gets a fresh database (``CREATE DATABASE``), litedurable's and DBOS's alike,
dropped afterwards; the ``path`` the workload modules receive is its DSN, so
``ld.App(path)`` opens litedurable's PostgreSQL journal (default schema ``litedurable``) and
``dbos_peer`` gives it to DBOS as ``system_database_url``. Workload (d) copies the crashed
database with ``CREATE DATABASE ... TEMPLATE``.

The baselines become psycopg round trips on the same server (``install`` swaps them into the
workload modules, in the parent before any fork): the raw commit is ``INSERT`` of a 200-byte
row then ``COMMIT`` (two round trips, as the SQLite raw commit's ``BEGIN``/``INSERT``/
``COMMIT``), the floor of (a) one autocommit ``INSERT`` of a small step-shaped row keyed by
``(workflow_id, step)`` (one round trip: issue 17's "raw single-row INSERT+COMMIT"), both with
``synchronous_commit`` on at ``full`` and off at ``normal``, in tables of their own in the
repetition's database. The workloads' own read-only watchers (``apsw.Connection(path)``) get a
small psycopg stand-in with the same three methods (``ApswShim``).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from litedurable.testing import NoPostgresError, postgres_server

SETTINGS = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on",
            "max_connections": "400", "shared_buffers": "128MB"}
SUFFIXES = (".raw", ".floor")



@contextmanager
def server() -> Iterator[str]:
    """An admin DSN: ``LITEDURABLE_BENCH_POSTGRES`` or a throwaway server started here."""
    given = os.environ.get("LITEDURABLE_BENCH_POSTGRES")
    if given:
        yield given
        return
    try:
        with postgres_server(**SETTINGS) as admin:
            yield admin
    except NoPostgresError as missing:
        raise SystemExit(f"--backend postgres: {missing}, and LITEDURABLE_BENCH_POSTGRES is "
                         "not set") from None


def server_settings(admin: str) -> dict[str, str]:
    names = ["server_version", "fsync", "synchronous_commit", "wal_sync_method",
             "full_page_writes", "max_connections", "shared_buffers"]
    with psycopg.connect(admin, autocommit=True) as conn:
        return {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names}  # type: ignore[index]


def _with_db(admin: str, name: str) -> str:
    base, _, _ = admin.partition("?")
    return base.rsplit("/", 1)[0] + "/" + name


def create_database(admin: str, template: str | None = None) -> str:
    """A fresh database's DSN (a copy of ``template``'s database, if given)."""
    name = f"ldbench_{uuid.uuid4().hex[:12]}"
    sql = f'CREATE DATABASE "{name}"'
    if template is not None:
        sql += f' TEMPLATE "{template.rsplit("/", 1)[1]}"'
    with psycopg.connect(admin, autocommit=True) as conn:
        for attempt in range(100):  # a killed victim's backends may linger a moment
            try:
                conn.execute(sql)  # type: ignore[arg-type]
                break
            except psycopg.errors.ObjectInUse:
                if attempt == 99:
                    raise
                time.sleep(0.1)
    return _with_db(admin, name)


def drop_database(admin: str, dsn: str) -> None:
    name = dsn.rsplit("/", 1)[1]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def _connect(path: str, durability: str, *, autocommit: bool) -> psycopg.Connection[Any]:
    for suffix in SUFFIXES:
        path = path.removesuffix(suffix)
    conn = psycopg.connect(path, autocommit=autocommit)
    sync = "on" if durability == "full" else "off"
    conn.execute(f"SET synchronous_commit = {sync}")  # type: ignore[arg-type]
    if not autocommit:
        conn.commit()
    return conn


class RawCommitter:
    """``INSERT`` a 200-byte row, ``COMMIT``: a plain transaction through psycopg."""

    def __init__(self, path: str, durability: str) -> None:
        self.conn = _connect(path, durability, autocommit=False)
        self.table = f"raw_{uuid.uuid4().hex[:8]}"
        self.conn.execute(f"CREATE TABLE {self.table} (k bigint PRIMARY KEY, v bytea)")  # type: ignore[arg-type]
        self.conn.commit()
        self.sql = f"INSERT INTO {self.table} VALUES (%s, %s)"
        self.payload = os.urandom(200)
        self.next = 0

    def commit(self, count: int) -> float:
        conn, sql, payload = self.conn, self.sql, self.payload
        start = time.perf_counter()
        for _ in range(count):
            conn.execute(sql, (self.next, payload), prepare=True)  # type: ignore[arg-type]
            conn.commit()
            self.next += 1
        return time.perf_counter() - start

    def close(self) -> None:
        self.conn.close()


class FloorCommitter:
    """(a)'s floor: one autocommit ``INSERT`` of a step-shaped row (one round trip)."""

    def __init__(self, path: str, durability: str) -> None:
        self.conn = _connect(path, durability, autocommit=True)
        self.table = f"floor_{uuid.uuid4().hex[:8]}"
        self.conn.execute(f"CREATE TABLE {self.table} (workflow_id text NOT NULL, "  # type: ignore[arg-type]
                          "step integer NOT NULL, output bytea, PRIMARY KEY (workflow_id, step))")
        self.sql = f"INSERT INTO {self.table} VALUES (%s, %s, %s)"
        self.workflow_id = str(uuid.uuid4())
        self.output = os.urandom(8)
        self.next = 0

    def commit(self, count: int) -> float:
        conn, sql, wid, output = self.conn, self.sql, self.workflow_id, self.output
        start = time.perf_counter()
        for _ in range(count):
            conn.execute(sql, (wid, self.next, output), prepare=True)  # type: ignore[arg-type]
            self.next += 1
        return time.perf_counter() - start

    def close(self) -> None:
        self.conn.close()


def raw_commit_seconds(path: str, durability: str, n: int) -> float:
    """Seconds per raw commit (``RawCommitter``) on this server."""
    raw = RawCommitter(path, durability)
    try:
        raw.commit(min(n, 20))  # connection warm-up, prepared statement
        return raw.commit(n) / n
    finally:
        raw.close()


def raw_commit_threads_per_s(path: str, durability: str, n: int, threads: int) -> float:
    """Raw commits per second with ``threads`` threads, each on its own connection."""
    committers = [RawCommitter(path, durability) for _ in range(threads)]
    share = n // threads
    workers = [threading.Thread(target=c.commit, args=(share,)) for c in committers]
    start = time.perf_counter()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    elapsed = time.perf_counter() - start
    for c in committers:
        c.close()
    return share * threads / elapsed


class ApswShim:
    """The slice of ``apsw`` the workloads' watchers use, on psycopg (read-only counts)."""

    SQLITE_OPEN_READONLY = 1
    Error = psycopg.Error

    class Connection:
        def __init__(self, path: str, flags: int = 0) -> None:
            self.conn = psycopg.connect(path, autocommit=True, options=(
                "-c search_path=litedurable,dbos,public"))

        def setbusytimeout(self, _ms: int) -> None:
            pass

        def execute(self, sql: str, *args: Any) -> psycopg.Cursor[Any]:
            return self.conn.execute(sql, *args)  # type: ignore[arg-type]

        def close(self) -> None:
            self.conn.close()


def fill_journal(dsn: str, rows: int, steps_per_workflow: int = 10) -> int:
    """(e) on PostgreSQL: ``ld_workloads.fill_journal`` with ``COPY`` into the journal's
    schema (default ``litedurable``), then ``VACUUM ANALYZE`` as a journal that grew over
    time would have been (autovacuum would otherwise start during the measurement)."""
    import ld_workloads

    from litedurable._storage import checksum

    app, template = ld_workloads.filler(dsn, steps_per_workflow)
    ids = ld_workloads.clone_ids(rows, steps_per_workflow)
    with psycopg.connect(dsn, autocommit=True,
                         options="-c search_path=litedurable -c synchronous_commit=off") as conn:
        def columns(table: str) -> list[str]:
            return [str(r[0]) for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                "'litedurable' AND table_name = %s ORDER BY ordinal_position", (table,))]

        def load(table: str, cols: list[str], values: Iterator[dict[str, Any]]) -> None:
            with conn.transaction(), conn.cursor() as cur, cur.copy(
                    f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:  # type: ignore[arg-type]
                for row in values:
                    copy.write_row([row[c] for c in cols])

        def rows_of(table: str) -> list[dict[str, Any]]:
            cols = columns(table)
            found = conn.execute(f"SELECT {', '.join(cols)} FROM {table} "  # type: ignore[arg-type]
                                 "WHERE workflow_id = %s ORDER BY 1", (template,)).fetchall()
            return [dict(zip(cols, r, strict=True)) for r in found]

        wf_row, step_rows = rows_of("workflows")[0], rows_of("steps")
        step_rows.sort(key=lambda r: int(r["step"]))
        load("workflows", columns("workflows"),
             ld_workloads.clone_workflow_rows(wf_row, ids, checksum))
        load("steps", columns("steps"), ld_workloads.clone_step_rows(step_rows, ids, checksum))
        conn.execute("VACUUM ANALYZE workflows")
        conn.execute("VACUUM ANALYZE steps")
        total = conn.execute("SELECT count(*) FROM steps").fetchone()
    ld_workloads.check_clones(app, ids, steps_per_workflow)
    return int(total[0]) if total else 0


def install() -> None:
    """Swap the SQLite baselines and watchers of the workload modules for these."""
    import dbos_peer
    import ld_workloads

    for module in (ld_workloads, dbos_peer):
        module.RawCommitter = RawCommitter  # type: ignore[attr-defined,misc]
        module.FloorCommitter = FloorCommitter  # type: ignore[attr-defined,misc]
        module.apsw = ApswShim  # type: ignore[attr-defined,misc]
    ld_workloads.raw_commit_seconds = raw_commit_seconds  # type: ignore[assignment]
    ld_workloads.raw_commit_threads_per_s = raw_commit_threads_per_s  # type: ignore[assignment]
    ld_workloads.fill_journal = fill_journal  # type: ignore[assignment]
