"""The journal: the one module that imports apsw and holds SQL.

It speaks bytes, str, int and float, and makes no workflow decisions: it stores what the
runtime tells it, refuses writes from a workflow's former owner (fencing), and reports what it
finds. Layout (schema version in ``PRAGMA user_version``, ``application_id`` = ``LDUR``)::

    workflows(workflow_id PK, name, status, inputs, output, error, checksum, created_at,
              updated_at, app_version, parent_id, owner, recovery_attempts, progress_mark,
              deadline, cancel_requested, detached)
    steps(workflow_id, step, kind, name, output, error, extra, checksum, started_at,
          finished_at)  PK (workflow_id, step), WITHOUT ROWID
    owners(owner PK, host, pid, heartbeat, lease, pid_namespace)    (the last two: schema 3)
    schedules(name PK, workflow, cron, tz, catch_up, paused, last_fire, created_at,
              updated_at)                                        (schema 2)

Writes use group commit without a hand-off on the quiet path (leader/follower, as databases
flush their logs): a writer that finds no commit in flight commits its own write at once in its
own thread; writers arriving meanwhile queue, and when that commit ends the queue's head is
woken to commit the whole queue in one ``BEGIN IMMEDIATE`` transaction (its step rows in one
statement), and only the writers each commit made durable are woken. A write refused inside a
batch (fenced) fails alone; the others are written again without it. A commit that raised is
"outcome unknown": each write in it is re-read and reported written or not, never assumed lost.
The statements per commit are kept few on purpose: each one releases the GIL and must win it
back from every other thread, which under load costs more than the statement itself.
"""

from __future__ import annotations

import bisect
import ctypes
import functools
import json
import logging
import os
import socket
import struct
import sys
import threading
import time
import urllib.parse
import weakref
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeVar

import apsw

from ._errors import (
    AppClosedError,
    DurableError,
    JournalCorruptError,
    JournalError,
    JournalFullError,
    JournalLockedError,
    JournalReadOnlyError,
    JournalVersionError,
    OwnershipLostError,
    WorkflowCancelledError,
    WorkflowConflictError,
    WorkflowNotFoundError,
)

__all__ = ["Journal", "OwnerRow", "ScheduleRow", "StepRow", "WorkflowRow"]

log = logging.getLogger("litedurable")

APPLICATION_ID = 0x4C445552  # "LDUR"
HOST = socket.gethostname()


@functools.cache
def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as file:
            return file.read().strip() or None
    except OSError:
        return None


def pid_namespace() -> str | None:
    """Which pid space this process's pids belong to, or None when that cannot be told.

    Containers sharing a volume can share a host name too, and a pid in one container's
    namespace says nothing about a process in another's: ``kill(pid, 0)`` there may find no
    such process while the owner is alive. The namespace's inode alone is not enough either:
    the initial namespace has the same inode on every Linux boot, so the kernel's boot id is
    part of the name. Read on each call, not once: a child of ``fork()`` after ``unshare``
    lives in another namespace than its parent. Outside Linux there are no pid namespaces, so
    the platform stands for one (as the host name did alone before).
    """
    if not sys.platform.startswith("linux"):
        return sys.platform
    boot = _boot_id()
    try:
        link = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return None if boot is None else f"{boot}/{link}"

Durability = Literal["full", "normal"]
T = TypeVar("T")

# Most reader connections one journal opens. WAL readers do not block one another, so a few
# let concurrent reads (a recovery resuming workflows on many run threads) proceed in
# parallel instead of queueing on one connection; more than the cores the GIL leaves
# SQLite to run on buys nothing.
MAX_READERS = 4

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE workflows (
        workflow_id       TEXT PRIMARY KEY,
        name              TEXT NOT NULL,
        status            TEXT NOT NULL,
        inputs            BLOB NOT NULL,
        output            BLOB,
        error             BLOB,
        checksum          INTEGER NOT NULL,
        created_at        REAL NOT NULL,
        updated_at        REAL NOT NULL,
        app_version       TEXT NOT NULL,
        parent_id         TEXT,
        owner             TEXT,
        recovery_attempts INTEGER NOT NULL DEFAULT 0,
        progress_mark     INTEGER NOT NULL DEFAULT -1,
        deadline          REAL,
        cancel_requested  INTEGER NOT NULL DEFAULT 0,
        detached          INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX workflows_by_status ON workflows(status, app_version);
    CREATE INDEX workflows_by_created ON workflows(created_at);
    CREATE INDEX workflows_by_parent ON workflows(parent_id) WHERE parent_id IS NOT NULL;
    CREATE TABLE steps (
        workflow_id TEXT NOT NULL,
        step        INTEGER NOT NULL,
        kind        TEXT NOT NULL,
        name        TEXT NOT NULL,
        output      BLOB,
        error       BLOB,
        extra       BLOB,
        checksum    INTEGER NOT NULL,
        started_at  REAL NOT NULL,
        finished_at REAL,
        PRIMARY KEY (workflow_id, step)
    ) WITHOUT ROWID;
    CREATE TABLE owners (
        owner     TEXT PRIMARY KEY,
        host      TEXT NOT NULL,
        pid       INTEGER NOT NULL,
        heartbeat REAL NOT NULL
    );
    """,
    """
    CREATE TABLE schedules (
        name       TEXT PRIMARY KEY,
        workflow   TEXT NOT NULL,
        cron       TEXT NOT NULL,
        tz         TEXT,
        catch_up   INTEGER NOT NULL,
        paused     INTEGER NOT NULL DEFAULT 0,
        last_fire  REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    # Each owner states its own lease (judged by it, not by a reader with a shorter one) and
    # its pid namespace (a pid is only checked by a reader in that same namespace). Rows an
    # older litedurable writes leave both NULL: the reader's lease, and no pid check.
    """
    ALTER TABLE owners ADD COLUMN lease REAL;
    ALTER TABLE owners ADD COLUMN pid_namespace TEXT;
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)

_WORKFLOW_COLUMNS = (
    "workflow_id, name, status, inputs, output, error, checksum, created_at, updated_at, "
    "app_version, parent_id, owner, recovery_attempts, deadline, cancel_requested, detached"
)
# The workflow bound to the first parameter and its descendants not started detached.
_DESCENDANTS = (
    "WITH RECURSIVE tree(id) AS (SELECT ? UNION SELECT w.workflow_id FROM workflows w "
    "JOIN tree ON w.parent_id = tree.id WHERE w.detached = 0)"
)
# Claim every (workflow_id, expected owner) pair of the JSON array :claims for :new at once.
# ``mark`` is the workflow's highest recorded step, found by one index seek per workflow (the
# min/max optimization needs the bare aggregate, hence coalesce outside the subquery) and
# materialized so both SET terms see the same value. The owner compare-and-swap and the
# pending check sit in the WHERE clause, as in the one-row UPDATE this replaced.
_CLAIM = (
    "WITH wanted AS MATERIALIZED ("
    "SELECT value ->> 0 AS id, value ->> 1 AS old, "
    "coalesce((SELECT max(step) FROM steps WHERE steps.workflow_id = value ->> 0), -1) AS mark "
    "FROM json_each(:claims)) "
    "UPDATE workflows SET owner = :new, "
    "recovery_attempts = CASE WHEN progress_mark = wanted.mark "
    "THEN recovery_attempts + 1 ELSE 1 END, "
    "progress_mark = wanted.mark "
    "FROM wanted WHERE workflows.workflow_id = wanted.id AND workflows.owner IS wanted.old "
    "AND workflows.status = 'pending' "
    "RETURNING workflows.workflow_id, workflows.recovery_attempts"
)
_STEP_COLUMNS = (
    "workflow_id, step, kind, name, output, error, extra, checksum, started_at, finished_at"
)
# A step row, written only while the owner bound last still owns its workflow; a select's open
# row (no finished_at yet) is completed, a finished row is never overwritten.
_UPSERT_STEP = (
    "ON CONFLICT(workflow_id, step) DO UPDATE SET output = excluded.output, "
    "error = excluded.error, extra = excluded.extra, checksum = excluded.checksum, "
    "finished_at = excluded.finished_at WHERE steps.finished_at IS NULL"
)
_INSERT_STEP = (
    f"INSERT INTO steps ({_STEP_COLUMNS}) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ? "
    f"WHERE EXISTS (SELECT 1 FROM workflows WHERE workflow_id = ? AND owner = ?) {_UPSERT_STEP}"
)
_STEP_ROW_WIDTH = 12  # the 10 columns, then the fence: workflow id and owner
# Many rows in one statement, padded to a bucket size so a handful of statements stay prepared
# (a padding row has a NULL workflow id, so its fence fails and it is never written).
_STEP_ROW_BUCKETS = (2, 4, 8, 16, 32, 64, 128, 256)
_ROWS_PER_INSERT = _STEP_ROW_BUCKETS[-1]


@functools.cache
def _insert_steps_sql(rows: int) -> str:
    values = ", ".join(["(" + ", ".join("?" * _STEP_ROW_WIDTH) + ")"] * rows)
    columns = ", ".join(f"column{i}" for i in range(1, 11))
    return (
        f"INSERT INTO steps ({_STEP_COLUMNS}) SELECT {columns} FROM (VALUES {values}) "
        "WHERE EXISTS (SELECT 1 FROM workflows WHERE workflow_id = column11 "
        f"AND owner = column12) {_UPSERT_STEP}"
    )


def checksum(*parts: bytes | str | None) -> int:
    """CRC-32 over length-prefixed parts, so a flipped payload byte is noticed on read.

    SQLite's ``integrity_check`` verifies pages and indexes, not the bytes of a value. The
    parts are joined and hashed in one call (CRC-32 streams, so this equals hashing them one
    by one, as files written by earlier versions were).
    """
    chunks: list[bytes] = []
    for part in parts:
        if part is None:
            chunks.append(_NONE_LENGTH)
            continue
        raw = part.encode() if isinstance(part, str) else part
        chunks.append(_pack_length(len(raw)))
        chunks.append(raw)
    return zlib.crc32(b"".join(chunks))


_pack_length = struct.Struct("<q").pack
_NONE_LENGTH = _pack_length(-1)


# Rows are named tuples, not frozen dataclasses: one is built per step and per workflow read,
# and a frozen dataclass's __init__ alone costs more than the rest of a row's Python.
class WorkflowRow(NamedTuple):
    workflow_id: str
    name: str
    status: str
    inputs: bytes
    output: bytes | None
    error: bytes | None
    created_at: float
    updated_at: float
    app_version: str
    parent_id: str | None
    owner: str | None
    recovery_attempts: int
    deadline: float | None
    cancel_requested: bool
    detached: bool


class StepRow(NamedTuple):
    workflow_id: str
    step: int
    kind: str
    name: str
    output: bytes | None
    error: bytes | None
    extra: bytes | None
    started_at: float
    finished_at: float | None


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    name: str
    workflow: str
    cron: str
    tz: str | None
    catch_up: bool
    paused: bool
    last_fire: float | None
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class OwnerRow:
    """An owner's lease row. ``lease`` and ``pid_namespace`` are None in rows an older
    litedurable wrote (before schema 3)."""

    owner: str
    host: str
    pid: int
    heartbeat: float
    lease: float | None = None
    pid_namespace: str | None = None


def _workflow_checksum(
    workflow_id: str, name: str, inputs: bytes, output: bytes | None, error: bytes | None
) -> int:
    return checksum(workflow_id, name, inputs, output, error)


def _step_checksum(row: StepRow) -> int:
    """``checksum`` of a step row's parts, spelled out: it runs once per step written or read."""
    pack = _pack_length
    wid, step, kind, name = (
        row.workflow_id.encode(), str(row.step).encode(), row.kind.encode(), row.name.encode()
    )
    output, error, extra = row.output, row.error, row.extra
    return zlib.crc32(b"".join((
        pack(len(wid)), wid, pack(len(step)), step, pack(len(kind)), kind, pack(len(name)), name,
        _NONE_LENGTH if output is None else pack(len(output)) + output,
        _NONE_LENGTH if error is None else pack(len(error)) + error,
        _NONE_LENGTH if extra is None else pack(len(extra)) + extra,
    )))


class _Write:
    """One queued write: what to run inside the transaction, and how to re-check it."""

    __slots__ = ("done", "error", "fn", "one_statement", "step_row", "value", "verify", "wake")

    def __init__(
        self,
        fn: Callable[[apsw.Connection], Any],
        verify: Callable[[apsw.Connection], bool] | None,
        one_statement: bool,
        step_row: tuple[Any, ...] | None,
    ) -> None:
        self.fn = fn
        self.verify = verify
        self.one_statement = one_statement
        self.step_row = step_row
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.wake: threading.Lock | None = None  # held while the writer waits its turn


_open_journals: weakref.WeakSet[Journal] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # SQLite connections must not cross fork(); poison the child's copies so it gets a clear
    # error instead of corrupting locks the parent still holds.
    for journal in list(_open_journals):
        journal._forked = True


os.register_at_fork(after_in_child=_after_fork_in_child)


class Journal:
    """A litedurable journal file.

    Args:
        path: the database file (created with mode 0600 if missing).
        durability: ``"full"`` (``synchronous=FULL``: survives power loss) or ``"normal"``
            (survives process crashes; a power cut may roll back the last commits).
        busy_timeout: seconds to wait for another process's write lock before
            ``JournalLockedError``.
        vfs: an apsw VFS name to open the file through (fault injection, power-loss tests).
        readonly: open with ``SQLITE_OPEN_READONLY``; every write raises
            ``JournalReadOnlyError``. On a read-only file system the file is read as
            immutable (SQLite cannot create the ``-shm`` a WAL file otherwise needs).

    Every commit asks SQLite whether the path still names the file it opened; once it does
    not (deleted, or replaced by a restored backup), the commit is not acknowledged and every
    later write raises ``JournalReadOnlyError``, and ``close`` empties the WAL into the file
    it belongs to, so the next open of the path does not replay it over another file.
    """

    def __init__(
        self,
        path: str,
        *,
        durability: Durability = "full",
        busy_timeout: float = 5.0,
        vfs: str | None = None,
        readonly: bool = False,
    ) -> None:
        if durability not in ("full", "normal"):
            raise ValueError(f"durability must be 'full' or 'normal', not {durability!r}")
        if (not isinstance(busy_timeout, int | float) or isinstance(busy_timeout, bool)
                or not busy_timeout >= 0):  # also refuses NaN
            raise ValueError(f"busy_timeout must be seconds >= 0, got {busy_timeout!r}")
        self.path = path
        self.readonly = readonly
        self._forked = False
        self._frozen: Callable[[], BaseException] | None = None
        self._closed = False
        self._mutex = threading.Lock()  # guards the queue and the commit state below
        self._cond = threading.Condition(self._mutex)  # for the rare waits: close(), watcher
        self._queue: list[_Write] = []
        self._committing = False
        self._closing = False  # close() waits for the commit in flight
        # Reader connections: ``_reader`` is the first; more open on demand up to
        # ``_max_readers`` (see ``_take_reader``). ``_lent`` counts readers in use or opening.
        self._read_cond = threading.Condition()
        self._idle_readers: list[apsw.Connection] = []
        self._extra_readers: list[apsw.Connection] = []
        self._max_readers = MAX_READERS
        self._lent = 0
        self._opening = 0
        self._sync: str | None = None
        self._busy_ms = int(min(busy_timeout * 1000, 2**31 - 1))  # SQLite takes a C int
        self._data_version: int | None = None
        self._version_wanted = False  # changed_elsewhere() waits for the committer to sample
        self._version_sampled: int | None = None
        self._vfs = vfs
        # SQLITE_FCNTL_HAS_MOVED writes its answer here (see ``_moved``); ``_gone`` is the
        # refusal every write gets once the file was deleted or replaced under us.
        self._has_moved = ctypes.c_int(0)
        self._has_moved_at = ctypes.addressof(self._has_moved)
        self._gone: str | None = None
        self._abspath = os.path.abspath(path)  # the message must not follow a later chdir
        self._immutable = False  # read-only file system: see ``_may_read_immutable``
        writer: apsw.Connection | None = None
        reader: apsw.Connection | None = None
        try:
            with _translated(path):
                if not readonly and vfs is None:
                    _create_private(path)
                writer = None if readonly else self._connect(readonly=False)
                reader = self._connect(readonly=readonly)
                self._writer, self._reader = writer, reader
                try:
                    self._check_and_migrate_patiently(durability, busy_timeout)
                except apsw.CantOpenError:
                    if writer is not None or not self._may_read_immutable():
                        raise
                    reader.close()
                    self._immutable = True
                    reader = self._reader = self._connect(readonly=True)
                    self._check_and_migrate_patiently(durability, busy_timeout)
                self._idle_readers.append(reader)
        except BaseException:
            # A refused file (foreign, newer, damaged, locked) is left with no handle open on it.
            for conn in (writer, reader):
                if conn is not None:
                    conn.close()
            raise
        _open_journals.add(self)

    # -- opening --------------------------------------------------------------------------

    def _connect(self, *, readonly: bool) -> apsw.Connection:
        flags = apsw.SQLITE_OPEN_READONLY if readonly else (
            apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
        )
        name = self.path
        if self._immutable:
            name = f"file:{urllib.parse.quote(self._abspath)}?immutable=1"
            flags |= apsw.SQLITE_OPEN_URI
        conn = apsw.Connection(name, flags=flags, vfs=self._vfs, statementcachesize=64)
        conn.setbusytimeout(self._busy_ms)
        conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
        conn.config(apsw.SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0)
        return conn

    def _may_read_immutable(self) -> bool:
        """Whether a read-only open that SQLite could not make may read the file as immutable.

        A WAL file read-only needs its ``-shm`` (and ``-wal``) to exist or be creatable; on a
        read-only file system, after a clean close removed them, neither holds, and SQLite
        refuses. Nothing can write the file there, so reading it as immutable (no locks, no
        WAL) is sound, if no WAL holds commits that reading would miss. A directory we could
        write to means the refusal had another cause: not this case.
        """
        if self._vfs is not None or self.path == ":memory:" or self.path.startswith("file:"):
            return False
        folder = os.path.dirname(self._abspath)
        return _size(f"{self.path}-wal") == 0 and not os.access(folder, os.W_OK)

    def _check_and_migrate_patiently(self, durability: Durability, busy_timeout: float) -> None:
        """``_check_and_migrate``, again on SQLITE_BUSY until ``busy_timeout`` has passed.

        Some statements of a first open get SQLITE_BUSY at once, without SQLite's busy handler:
        ``PRAGMA journal_mode=WAL`` while another process is switching the same new file to
        WAL, or reading the schema while it runs WAL recovery. Every step of the check re-reads
        what it decides on, so running it again is safe.
        """
        deadline = time.monotonic() + busy_timeout
        pause = 0.001
        while True:
            try:
                self._check_and_migrate(durability)
                return
            except apsw.BusyError:
                if time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _check_and_migrate(self, durability: Durability) -> None:
        conn = self._writer or self._reader
        if self._vfs is None:
            _check_header(self.path)
        # One statement, so one snapshot: another process migrating a new file at this moment
        # must not show us its tables without its application id.
        app_id: int
        version: int
        tables: int
        app_id, version, tables = conn.execute(  # type: ignore[assignment]
            "SELECT (SELECT application_id FROM pragma_application_id), "
            "(SELECT user_version FROM pragma_user_version), "
            "(SELECT count(*) FROM sqlite_schema)"
        ).fetchall()[0]
        if app_id != APPLICATION_ID and (app_id != 0 or tables):
            raise JournalVersionError(
                f"{self.path} is an SQLite database of another program (application_id "
                f"{app_id:#x}, {tables} schema objects), not a litedurable journal. Point the "
                "App at a new file; this one was not modified."
            )
        if version > SCHEMA_VERSION:
            raise JournalVersionError(
                f"{self.path} was written by a newer litedurable (journal schema {version}, this "
                f"version reads up to {SCHEMA_VERSION}). Upgrade litedurable; the file was not "
                "modified."
            )
        if self._writer is None:
            if version < SCHEMA_VERSION:
                raise JournalReadOnlyError(
                    f"{self.path} needs a schema upgrade ({version} -> {SCHEMA_VERSION}) but was "
                    "opened read-only. Open it once read-write to migrate it."
                )
            return
        sync = "FULL" if durability == "full" else "NORMAL"
        mode: str = _scalar(conn, "PRAGMA journal_mode=WAL")
        if mode.lower() != "wal":
            raise JournalError(
                f"{self.path} could not be switched to WAL mode (SQLite kept {mode!r}); the "
                "file system may not support the shared memory WAL needs (a network share?). "
                "Put the journal on a local disk."
            )
        conn.execute(f"PRAGMA synchronous={sync}")
        self._reader.execute(f"PRAGMA synchronous={sync}")
        self._sync = sync  # for the readers opened later
        if version < SCHEMA_VERSION:
            # One IMMEDIATE transaction, version re-read inside it: two processes opening a new
            # file at once migrate it once, and a crash mid-migration leaves the old version.
            conn.execute("BEGIN IMMEDIATE")
            try:
                current: int = _scalar(conn, "PRAGMA user_version")
                for sql in _MIGRATIONS[current:]:
                    conn.execute(sql)
                conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise

    def close(self) -> None:
        """Close every connection; every later call raises ``AppClosedError``.

        A checkpoint that fails as the last connection closes (disk full) loses nothing (the
        WAL keeps every commit, and the next open replays it), so it is logged, not raised.
        """
        with self._cond:
            self._closing = True
            while self._committing:
                self._cond.wait()
            self._closed = True
        self._drain_wal_if_gone()
        failure: apsw.Error | None = None
        with self._read_cond:
            while self._lent:  # reads that began before the close finish first
                self._read_cond.wait()
            # The first reader closes last, as it did when it was the only one: the last
            # connection to close checkpoints the WAL.
            for conn in (*self._extra_readers, self._writer, self._reader):
                if conn is None:
                    continue
                try:
                    conn.close()
                except apsw.Error as exc:
                    failure = failure or exc
                    conn.close(True)  # force: the handle is released whatever SQLite says
        _open_journals.discard(self)
        if failure is not None:
            log.warning("litedurable: the final checkpoint of %s failed (%s); nothing is lost, "
                        "the next open replays the WAL", self.path, _translate(failure, self.path))

    def _drain_wal_if_gone(self) -> None:
        """Empty the WAL into the file we opened if the path now names another file (or none).

        SQLite does not checkpoint on close once the file has moved, and leaves the WAL behind:
        the next open of the path would replay this file's pages over the one now there (a
        backup restored while the App ran). A ``TRUNCATE`` checkpoint writes them into the
        file they belong to, wherever it went, and leaves an empty WAL. A frozen journal (a
        simulated crash) writes nothing, as a dead process would not.
        """
        if self._writer is None or self._frozen is not None or self._forked:
            return
        if self._gone is None and self._moved() is None:
            return
        try:
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except apsw.Error as exc:
            log.warning("litedurable: %s was deleted or replaced while open, and its WAL could "
                        "not be emptied (%s); delete %s-wal before opening the path again",
                        self.path, _translate(exc, self.path), self.path)

    @property
    def gone(self) -> str | None:
        """Why this journal refuses every write (its file was deleted or replaced), or None."""
        return self._gone

    def _moved(self) -> str | None:
        """Why the path no longer names the file this journal opened, or None if it does.

        Asked of SQLite (``SQLITE_FCNTL_HAS_MOVED``: the unix VFS compares the inode it opened
        with a ``stat`` of the path it opened, made absolute at open, so a later ``chdir`` does
        not matter). It runs once per commit, about 1 us, half of an ``os.stat`` from Python.
        A VFS that does not answer (a test's in-memory one) is taken as "not moved".
        """
        writer = self._writer
        assert writer is not None
        if not writer.file_control("main", apsw.SQLITE_FCNTL_HAS_MOVED, self._has_moved_at):
            return None
        if not self._has_moved.value:
            # SQLite keeps writing to the -wal it has open; if the path's one was deleted, every
            # commit since lives only in an unlinked file and a crash loses it (and what came
            # before, that was never checkpointed).
            if os.path.exists(self._abspath + "-wal"):
                return None
            return (
                f"the journal's write-ahead log {self.path}-wal was deleted while this App had "
                "it open. The write was refused: it would have been lost at the next crash. "
                "Close this App (its close writes what the log held into the journal) and "
                "launch a new one; never delete -wal or -shm files of an open journal."
            )
        if os.path.lexists(self._abspath):
            what = "replaced by another file (a backup restored, or the file moved away)"
        else:
            what = "deleted"
        return (
            f"the journal file {self.path} was {what} while this App had it open. The write "
            "was refused: nothing this App writes can reach the file now at that path. Close "
            "this App and launch a new one on the file you mean to use (restore a backup "
            "first if the file was deleted by mistake)."
        )

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def freeze(self, crash: Callable[[], BaseException]) -> None:
        """Refuse every later write by raising ``crash()``: an in-process stand-in for death.

        Crash tests call this at a named crash point, so nothing the abandoned App does
        afterwards reaches the file, exactly as if the process had been killed there.
        """
        self._frozen = crash

    @property
    def frozen(self) -> bool:
        """True once ``freeze`` was called (a simulated crash happened)."""
        return self._frozen is not None

    # -- group commit ---------------------------------------------------------------------

    def _usable(self) -> None:
        if self._frozen is not None:
            raise self._frozen()
        if self._forked:
            raise JournalError(
                f"this journal ({self.path}) was opened before fork(); SQLite connections cannot "
                "be used in a child process. Create a new App in the child."
            )
        if self._closed:
            raise AppClosedError(f"the journal {self.path} is closed; launch a new App to use it")

    def write(
        self,
        fn: Callable[[apsw.Connection], T],
        verify: Callable[[apsw.Connection], bool] | None = None,
        *,
        one_statement: bool = False,
        step_row: tuple[Any, ...] | None = None,
    ) -> T:
        """Run ``fn`` inside a write transaction, committed before this returns.

        ``verify`` re-checks, after a commit that raised, whether ``fn``'s effect is in the
        file; without it such a write is reported as failed (``JournalError``). A write the
        re-check finds in the file returns what ``fn`` returned, or None if the failing
        statement was ``fn``'s own (see ``one_statement``).
        ``one_statement`` promises that ``fn`` changes the file with at most one statement
        (any other only reads): alone in its batch, it then runs in SQLite's autocommit mode,
        where that statement is its own transaction, with the write lock taken before it
        reads, and no ``BEGIN``/``COMMIT`` round trips. ``step_row`` (the parameters of one
        ``_INSERT_STEP`` row plus its fence: workflow id and owner) lets a batch write all its
        step rows in one statement; ``fn`` must then be that insert.
        """
        if self._writer is None:
            raise JournalReadOnlyError(
                f"{self.path} was opened read-only; open it read-write to change it"
            )
        op = _Write(fn, verify, one_statement, step_row)
        batch: list[_Write] | None = None
        with self._mutex:
            self._usable()
            if self._committing:  # follow: the committer wakes us when our batch is durable
                op.wake = threading.Lock()
                op.wake.acquire()
                self._queue.append(op)
            else:  # lead: commit our own write now, in this thread (the queue is empty)
                self._committing = True
                batch = [op]
        if batch is None:
            assert op.wake is not None
            op.wake.acquire()
            if not op.done:  # handed the lead: commit the whole queue, which starts with us
                with self._mutex:
                    batch, self._queue = self._queue, []
                    try:
                        self._usable()
                    except BaseException as exc:
                        for queued in batch:
                            queued.error, queued.done = exc, True
        if batch is not None:
            self._lead(batch)
        if op.error is not None:
            raise op.error
        return op.value  # type: ignore[no-any-return]

    def _lead(self, batch: list[_Write]) -> None:
        """Commit ``batch``, then wake exactly its writers, handing the lead to the next one.

        Writers that queued during the commit are left for the queue head, so a commit wakes
        the writers it made durable plus one, never every waiting thread.
        """
        try:
            if not batch[0].done:
                self._commit(batch)
        finally:
            with self._mutex:
                successor = self._queue[0] if self._queue else None
                if successor is None:
                    self._committing = False
                if self._version_wanted or (successor is None and self._closing):
                    self._cond.notify_all()  # changed_elsewhere() and close() wait on these
            for queued in batch[1:]:
                assert queued.wake is not None
                queued.wake.release()
            if successor is not None:
                assert successor.wake is not None
                successor.wake.release()

    def _commit(self, batch: list[_Write]) -> None:
        """One transaction for the whole batch, with no statement per write beyond its own.

        A write refused with a ``DurableError`` (fenced, not found) fails alone: the
        transaction is rolled back and the others run again without it. Refusals are rare,
        and a savepoint around every write would cost two more statements each (each one a
        release and re-take of the GIL while other threads compete for it).
        """
        conn = self._writer
        assert conn is not None
        if self._gone is not None:  # refused before it reaches the WAL of a file no one sees
            for op in batch:
                op.error, op.done = JournalReadOnlyError(self._gone), True
            return
        todo = batch
        grouped = True
        try:
            if len(batch) == 1 and batch[0].one_statement:
                if self._frozen is not None:
                    raise self._frozen()
                op = batch[0]
                try:
                    op.value = op.fn(conn)
                except DurableError as exc:  # refused: the statement changed nothing
                    op.error = exc
                todo = []
                if self._version_wanted:
                    self._version_sampled = _scalar(conn, "PRAGMA data_version")
            while todo:
                conn.execute("BEGIN IMMEDIATE")
                rest = _insert_step_rows(conn, todo) if grouped else todo
                if rest is None:  # a row was fenced or already there: find which, one by one
                    _rollback(conn)
                    grouped = False
                    continue
                refused = _apply(conn, rest)
                if refused is None:
                    if self._frozen is not None:
                        raise self._frozen()
                    conn.execute("COMMIT")
                    if self._version_wanted:  # the commit watcher waits for us (no lock needed)
                        self._version_sampled = _scalar(conn, "PRAGMA data_version")
                    break
                _rollback(conn)
                todo = [op for op in todo if op is not refused]
        except apsw.Error as exc:
            _rollback(conn)
            self._settle_unknown(todo, _translate(exc, self.path))
        except BaseException as exc:  # a simulated crash, KeyboardInterrupt: nothing settles
            _rollback(conn)
            for op in batch:
                op.error = op.error or exc
                op.done = True
            raise
        gone = self._moved()
        if gone is not None:  # committed to a file deleted or replaced: not acknowledged
            self._gone = gone
            for op in batch:
                if op.error is None:
                    op.value, op.error = None, JournalReadOnlyError(gone)
        for op in batch:
            op.done = True

    def _settle_unknown(self, batch: list[_Write], error: JournalError) -> None:
        conn = self._writer
        assert conn is not None
        for op in batch:
            if op.error is not None:
                continue
            try:
                written = op.verify is not None and op.verify(conn)
            except apsw.Error:
                written = False
            if not written:
                op.value, op.error = None, error

    def read(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run ``fn`` on a reader connection of its own (sees only committed data).

        Each statement ``fn`` runs is its own read transaction, as on any autocommit
        connection.
        """
        conn = self._take_reader()
        try:
            with _translated(self.path):
                return fn(conn)
        finally:
            with self._read_cond:
                self._idle_readers.append(conn)
                self._lent -= 1
                if self._closed:
                    # close() waits on this condition too: a single notify could wake a read
                    # that then refuses to start, and close() would wait forever.
                    self._read_cond.notify_all()
                else:
                    self._read_cond.notify()  # one reader returned: one waiting read can go

    def _take_reader(self) -> apsw.Connection:
        """An idle reader; a new one if all are busy and fewer than the most are open.

        A reader that cannot be opened (file descriptors exhausted, an I/O fault) is not an
        error: the reads share the connections already open, as they would at the limit.
        """
        with self._read_cond:
            while True:
                self._usable()
                if self._idle_readers:
                    self._lent += 1
                    return self._idle_readers.pop()  # the most recently used: warm cache
                if 1 + len(self._extra_readers) + self._opening < self._max_readers:
                    self._lent += 1
                    self._opening += 1
                    break
                self._read_cond.wait()
        conn: apsw.Connection | None = None
        try:
            conn = self._connect(readonly=self.readonly)
            if self._sync is not None:
                conn.execute(f"PRAGMA synchronous={self._sync}")
        except apsw.Error as exc:
            if conn is not None:
                conn.close()
            conn = None
            log.debug("litedurable: no extra reader on %s (%s); sharing the open ones",
                      self.path, exc)
        except BaseException:
            if conn is not None:
                conn.close()
            with self._read_cond:
                self._opening -= 1
                self._lent -= 1
                self._read_cond.notify_all()
            raise
        with self._read_cond:
            self._opening -= 1
            if conn is not None:
                self._extra_readers.append(conn)
                return conn
            self._max_readers = 1 + len(self._extra_readers) + self._opening
            self._lent -= 1
            self._read_cond.notify_all()
        return self._take_reader()

    # -- workflows ------------------------------------------------------------------------

    def insert_workflow(
        self,
        *,
        workflow_id: str,
        name: str,
        inputs: bytes,
        now: float,
        app_version: str,
        parent_id: str | None,
        owner: str,
        deadline: float | None = None,
        detached: bool = False,
    ) -> tuple[bool, WorkflowRow]:
        """Create a pending workflow owned by ``owner`` unless the id exists.

        Returns (created, row): ``created`` is False when the id was already taken, and
        ``row`` is then the existing workflow (whatever its name).
        """
        total = _workflow_checksum(workflow_id, name, inputs, None, None)

        def insert(conn: apsw.Connection) -> tuple[bool, WorkflowRow]:
            if parent_id is not None:
                parent = _fetch_workflow(conn, parent_id)
                if parent is not None and parent.status != "pending":
                    raise WorkflowCancelledError(
                        f"workflow {parent_id!r} is {parent.status}; it cannot start child "
                        f"{workflow_id!r}"
                    )
            conn.execute(
                "INSERT OR IGNORE INTO workflows (workflow_id, name, status, inputs, checksum, "
                "created_at, updated_at, app_version, parent_id, owner, deadline, detached) "
                "VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (workflow_id, name, inputs, total, now, now, app_version, parent_id, owner,
                 deadline, int(detached)),
            )
            if conn.changes() == 1:  # created: the row is what we wrote, no need to read it
                return True, WorkflowRow(
                    workflow_id, name, "pending", inputs, None, None, now, now, app_version,
                    parent_id, owner, 0, deadline, False, detached,
                )
            row = _fetch_workflow(conn, workflow_id)
            assert row is not None
            return False, row

        def verify(conn: apsw.Connection) -> bool:
            return _fetch_workflow(conn, workflow_id) is not None

        # Not ``one_statement``: after a commit that raised, the re-read can tell that the row
        # is there but not whether this call created it, which the caller needs.
        return self.write(insert, verify)

    def get_workflow(self, workflow_id: str) -> WorkflowRow | None:
        """The workflow's row, checksum verified, or None."""
        return self.read(lambda conn: _fetch_workflow(conn, workflow_id))

    def finish_workflow(
        self,
        workflow_id: str,
        owner: str | None,
        *,
        status: str,
        output: bytes | None,
        error: bytes | None,
        now: float,
        known: WorkflowRow | None = None,
    ) -> bool:
        """Record the workflow's final status and outcome (fenced on ``owner`` when given).

        Returns False, writing nothing, when the workflow is no longer pending (it was
        cancelled, or timed out, while its run was finishing): the first outcome stays.
        ``known``, the row as the run loaded it, saves reading it back: a workflow's name and
        inputs never change, so its checksum can be computed up front and the write is one
        fenced ``UPDATE``.
        """

        def finish(conn: apsw.Connection) -> bool:
            if known is not None:
                total = _workflow_checksum(workflow_id, known.name, known.inputs, output, error)
                conn.execute(
                    "UPDATE workflows SET status = ?, output = ?, error = ?, checksum = ?, "
                    "updated_at = ? WHERE workflow_id = ? AND status = 'pending' "
                    "AND (? IS NULL OR owner = ?)",
                    (status, output, error, total, now, workflow_id, owner, owner),
                )
                if conn.changes() == 1:
                    return True
                _fenced(conn, workflow_id, owner)  # raises the error that says why, if fenced
                return False  # no longer pending
            row = _fenced(conn, workflow_id, owner)
            if row.status != "pending":
                return False
            total = _workflow_checksum(workflow_id, row.name, row.inputs, output, error)
            conn.execute(
                # The owner stays: go steps that lost a select may still record their outcome.
                "UPDATE workflows SET status = ?, output = ?, error = ?, checksum = ?, "
                "updated_at = ? WHERE workflow_id = ?",
                (status, output, error, total, now, workflow_id),
            )
            return True

        def verify(conn: apsw.Connection) -> bool:
            row = _fetch_workflow(conn, workflow_id)
            return row is not None and row.status == status

        # None: an autocommit statement raised and the re-read found the outcome written.
        return self.write(finish, verify, one_statement=known is not None) is not False

    def resume(self, workflow_id: str, now: float, *, owner: str | None,
               app_version: str | None = None) -> list[str]:
        """Make a finished workflow pending again, with the descendants its cancel reached.

        The workflow (any status but pending or succeeded) and its non-detached descendants
        that were cancelled together with it (same recorded cancellation) become pending under
        ``owner`` with no deadline and a fresh recovery count; a child cancelled on its own
        stays cancelled. ``app_version``, if given, is recorded on each of them (and on the
        workflow alone if it is pending: that moves it without disturbing its owner).
        Returns the ids made pending (empty when there was nothing to resume).
        """

        def update(conn: apsw.Connection) -> list[str]:
            row = _fetch_workflow(conn, workflow_id)
            if row is None:
                raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r} in {self.path}")
            if row.status == "pending" and app_version is not None:
                conn.execute(
                    "UPDATE workflows SET app_version = ?, updated_at = ? WHERE workflow_id = ?",
                    (app_version, now, workflow_id),
                )
            if row.status in ("pending", "succeeded"):
                return []
            ids = [workflow_id] + [
                r[0] for r in conn.execute(
                    f"{_DESCENDANTS} SELECT w.workflow_id FROM workflows w JOIN tree "
                    "ON w.workflow_id = tree.id WHERE w.workflow_id != ? "
                    "AND w.status = 'cancelled' AND w.error IS ?",
                    (workflow_id, workflow_id, row.error),
                )
            ]
            for wid in ids:
                conn.execute(
                    "UPDATE workflows SET status = 'pending', updated_at = ?, owner = ?, "
                    "deadline = NULL, recovery_attempts = 0, "
                    "app_version = coalesce(?, app_version) WHERE workflow_id = ?",
                    (now, owner, app_version, wid),
                )
            return ids

        return self.write(update)

    def list_workflows(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        app_version: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[WorkflowRow]:
        """Workflows matching every given filter, newest first."""
        where, params = [], []
        for column, value in (("status", status), ("name", name), ("app_version", app_version)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = f"SELECT {_WORKFLOW_COLUMNS} FROM workflows"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, workflow_id DESC LIMIT ? OFFSET ?"
        params_all: list[Any] = [*params, -1 if limit is None else limit, offset]
        return self.read(lambda conn: [_workflow_row(r) for r in conn.execute(sql, params_all)])

    def pending_by_version(self) -> dict[str, int]:
        """How many pending workflows each app version has."""
        return self.read(
            lambda conn: {
                v: n
                for v, n in conn.execute(
                    "SELECT app_version, count(*) FROM workflows WHERE status = 'pending' "
                    "GROUP BY app_version"
                )
            }
        )

    def pending(self, app_version: str | None) -> list[tuple[str, str, str | None]]:
        """(workflow_id, name, owner) of each pending workflow of ``app_version`` (of every
        version when None), oldest first."""
        return self.read(
            lambda conn: [
                (wid, name, owner)
                for wid, name, owner in conn.execute(
                    "SELECT workflow_id, name, owner FROM workflows WHERE status = 'pending' "
                    "AND (?1 IS NULL OR app_version = ?1) ORDER BY created_at",
                    (app_version,),
                )
            ]
        )

    def cancel(self, workflow_id: str, error: bytes, now: float) -> list[str]:
        """Cancel a workflow and its non-detached descendants that are pending (any process may).

        Their owner stays, so steps already running can still record what they did (a resume
        then does not redo it); the owner's runtime notices the status and stops the run, and
        its final outcome is refused (``finish_workflow`` writes only pending workflows).
        Returns the ids that were pending and are now cancelled.
        """

        def update(conn: apsw.Connection) -> list[str]:
            ids = [workflow_id] + [
                r[0]
                for r in conn.execute(
                    f"{_DESCENDANTS} SELECT id FROM tree WHERE id != ?",
                    (workflow_id, workflow_id),
                )
            ]
            done = []
            for wid in ids:
                row = _fetch_workflow(conn, wid)
                if row is None or row.status != "pending":
                    continue
                total = _workflow_checksum(wid, row.name, row.inputs, None, error)
                conn.execute(
                    "UPDATE workflows SET status = 'cancelled', error = ?, checksum = ?, "
                    "updated_at = ? WHERE workflow_id = ?",
                    (error, total, now, wid),
                )
                done.append(wid)
            return done

        return self.write(update)

    def claim(
        self, claims: Iterable[tuple[str, str | None]], owner: str, *, forget: Sequence[str] = ()
    ) -> dict[str, int]:
        """Take over workflows from presumed-dead owners (compare-and-swap on the owner).

        Each claim counts a recovery attempt, reset to 1 when the workflow recorded new steps
        since its last claim (progress is not a crash loop). Returns the claimed ids with
        their attempt counts, in the order of ``claims``; an id whose owner changed meanwhile
        is left out. The owner rows named in ``forget`` (owners found dead) are deleted in
        the same transaction.

        One set-based UPDATE for all of them, and one commit: recovering a thousand
        workflows is one statement, not a thousand, so the first resumed step is not kept
        waiting for it.
        """
        claims = list(claims)
        if not claims and not forget:
            return {}
        # JSON carries the (id, expected owner) pairs into SQL in one parameter; a JSON null
        # comes out of ->> as SQL NULL, which the IS comparison matches.
        wanted = json.dumps(claims)

        def take(conn: apsw.Connection) -> dict[str, int]:
            found = {
                wid: int(attempts)
                for wid, attempts in conn.execute(_CLAIM, {"new": owner, "claims": wanted})
            }
            for dead in forget:
                conn.execute("DELETE FROM owners WHERE owner = ?", (dead,))
            return {wid: found[wid] for wid, _ in claims if wid in found}

        return self.write(take)

    def release(self, owner: str) -> None:
        """Give up ``owner``'s pending workflows and its owner row (clean shutdown)."""

        def drop(conn: apsw.Connection) -> None:
            conn.execute("UPDATE workflows SET owner = NULL WHERE owner = ?", (owner,))
            conn.execute("DELETE FROM owners WHERE owner = ?", (owner,))

        self.write(drop)

    def statuses(self, workflow_ids: Iterable[str]) -> dict[str, str]:
        """The status of each of ``workflow_ids`` that exists."""
        ids = list(workflow_ids)

        def load(conn: apsw.Connection) -> dict[str, str]:
            found: dict[str, str] = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ", ".join("?" * len(chunk))
                for wid, status in conn.execute(
                    f"SELECT workflow_id, status FROM workflows WHERE workflow_id IN ({marks})",
                    chunk,
                ):
                    found[wid] = status
            return found

        return self.read(load) if ids else {}

    def changed_elsewhere(self, patience: float = 0.05) -> bool:
        """True if another connection committed since the last call (cheap; no file I/O).

        Asks ``PRAGMA data_version`` of the writer connection, which changes for every commit
        but its own: another process, or another App in this one. While a commit is in flight
        the committing thread answers for it right after its commit, so a writer that is never
        idle cannot hide the others' commits. Gives up (False) after ``patience`` seconds.
        """
        give_up = time.monotonic() + patience
        with self._cond:
            if self._writer is None:
                return False
            self._version_wanted = True
            try:
                while True:
                    if self._closed or self._frozen:
                        return False
                    if self._version_sampled is not None:
                        version = self._version_sampled
                        break
                    if not self._committing:
                        with _translated(self.path):
                            version = _scalar(self._writer, "PRAGMA data_version")
                        break
                    if not self._cond.wait(max(0.0, give_up - time.monotonic())):
                        return False
            finally:
                self._version_wanted = False
                self._version_sampled = None
        changed = self._data_version is not None and version != self._data_version
        self._data_version = version
        return changed

    # -- schedules ------------------------------------------------------------------------

    def upsert_schedule(self, row: ScheduleRow, now: float) -> None:
        """Create a schedule, or update its definition keeping its pause state and last fire."""
        self.write(
            lambda conn: conn.execute(
                "INSERT INTO schedules (name, workflow, cron, tz, catch_up, paused, last_fire, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET workflow = excluded.workflow, "
                "cron = excluded.cron, tz = excluded.tz, catch_up = excluded.catch_up, "
                "updated_at = excluded.updated_at",
                (row.name, row.workflow, row.cron, row.tz, int(row.catch_up), int(row.paused),
                 row.last_fire, now, now),
            )
        )

    def schedules(self) -> list[ScheduleRow]:
        """Every schedule, by name."""
        return self.read(
            lambda conn: [
                ScheduleRow(name, workflow, cron, tz, bool(catch_up), bool(paused), last_fire,
                            created, updated)
                for name, workflow, cron, tz, catch_up, paused, last_fire, created, updated
                in conn.execute(
                    "SELECT name, workflow, cron, tz, catch_up, paused, last_fire, created_at, "
                    "updated_at FROM schedules ORDER BY name"
                )
            ]
        )

    def pause_schedule(self, name: str, paused: bool, now: float) -> bool:
        """Pause or unpause a schedule; False if there is none by that name."""

        def update(conn: apsw.Connection) -> bool:
            conn.execute(
                "UPDATE schedules SET paused = ?, updated_at = ? WHERE name = ?",
                (int(paused), now, name),
            )
            return conn.changes() == 1

        return self.write(update)

    def delete_schedule(self, name: str) -> bool:
        """Remove a schedule (its past firings stay); False if there is none by that name."""

        def delete(conn: apsw.Connection) -> bool:
            conn.execute("DELETE FROM schedules WHERE name = ?", (name,))
            return conn.changes() == 1

        return self.write(delete)

    def schedule_fired(self, name: str, fire: float) -> None:
        """Remember that the firing at ``fire`` was started (the latest fire only grows)."""
        self.write(
            lambda conn: conn.execute(
                "UPDATE schedules SET last_fire = max(coalesce(last_fire, ?), ?) WHERE name = ?",
                (fire, fire, name),
            )
        )

    # -- owners ---------------------------------------------------------------------------

    def heartbeat(self, owner: str, now: float, *, lease: float | None = None) -> None:
        """Create or refresh ``owner``'s lease row: this process's host, pid, pid namespace,
        and ``lease``, the seconds after a heartbeat for which the owner vouches for itself
        (None: readers judge it by their own lease, as rows from before schema 3)."""
        identity = (owner, HOST, os.getpid(), now, lease, pid_namespace())
        self.write(
            lambda conn: conn.execute(
                "INSERT INTO owners (owner, host, pid, heartbeat, lease, pid_namespace) "
                "VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(owner) DO UPDATE SET heartbeat = excluded.heartbeat",
                identity,
            )
        )

    def owners(self) -> dict[str, OwnerRow]:
        """Every live-or-dead owner row, by owner token."""
        return self.read(
            lambda conn: {
                r[0]: OwnerRow(*r)
                for r in conn.execute(
                    "SELECT owner, host, pid, heartbeat, lease, pid_namespace FROM owners"
                )
            }
        )

    # -- steps ----------------------------------------------------------------------------

    def load_steps(self, workflow_id: str) -> list[StepRow]:
        """Every step row of the workflow, in step order, checksums verified (one query)."""
        return self.read(lambda conn: _fetch_steps(conn, workflow_id, self.path))

    def load_workflow(self, workflow_id: str) -> tuple[WorkflowRow | None, list[StepRow]]:
        """The workflow's row and every step row, as ``get_workflow`` and ``load_steps`` give.

        One read (one reader taken, one round of locking) for what a run needs to resume: a
        recovery drives a thousand of these at once. The row is read first, as separately:
        steps only ever grow, so steps read after it are never older than it.
        """

        def load(conn: apsw.Connection) -> tuple[WorkflowRow | None, list[StepRow]]:
            row = _fetch_workflow(conn, workflow_id)
            return row, [] if row is None else _fetch_steps(conn, workflow_id, self.path)

        return self.read(load)

    def record_step(self, row: StepRow, owner: str) -> None:
        """Insert a finished step row, or complete an open one (a select awaiting decision).

        Refused with ``OwnershipLostError`` when ``owner`` no longer owns the workflow.
        """
        total = _step_checksum(row)
        fenced_row = (row.workflow_id, row.step, row.kind, row.name, row.output, row.error,
                      row.extra, total, row.started_at, row.finished_at, row.workflow_id, owner)

        def insert(conn: apsw.Connection) -> None:
            # The fence is part of the INSERT: nothing is written unless ``owner`` still owns
            # the workflow, and only a write that changed nothing needs to find out why.
            conn.execute(_INSERT_STEP, fenced_row)
            if conn.changes() == 0:
                _fenced(conn, row.workflow_id, owner)  # raises the error that says which
                _refuse_stale_step(conn, row, total, owner)

        def verify(conn: apsw.Connection) -> bool:
            found = conn.execute(
                "SELECT checksum FROM steps WHERE workflow_id = ? AND step = ?",
                (row.workflow_id, row.step),
            ).fetchall()
            return bool(found) and found[0][0] == total

        self.write(insert, verify, one_statement=True, step_row=fenced_row)

    def fork(self, source: WorkflowRow, target_id: str, below: int, *, now: float,
             app_version: str, owner: str | None) -> int:
        """Create ``target_id`` with ``source``'s name and inputs and its steps below ``below``.

        One transaction, so a crash leaves either no fork or a complete one. Returns the number
        of step rows copied.
        """
        source_id = source.workflow_id
        total = _workflow_checksum(target_id, source.name, source.inputs, None, None)
        below = min(below, 2**63 - 1)  # past SQLite's integers means every step, as it says

        def copy(conn: apsw.Connection) -> int:
            # Checked inside the write transaction, so no start can take the id in between.
            taken: list[Any] = conn.execute(
                "SELECT name, status FROM workflows WHERE workflow_id = ?", (target_id,)
            ).fetchall()
            if taken:
                raise WorkflowConflictError(
                    f"cannot fork {source_id!r} into {target_id!r}: that id is already taken by "
                    f"a {taken[0][0]!r} workflow ({taken[0][1]}), which was left as it is. Pass "
                    "another new id, or none for a random one."
                )
            conn.execute(
                "INSERT INTO workflows (workflow_id, name, status, inputs, checksum, created_at, "
                "updated_at, app_version, parent_id, owner) "
                "VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)",
                (target_id, source.name, source.inputs, total, now, now, app_version,
                 source.parent_id, owner),
            )
            rows: list[Any] = conn.execute(
                f"SELECT {_STEP_COLUMNS} FROM steps WHERE workflow_id = ? AND step < ?",
                (source_id, below),
            ).fetchall()
            for r in rows:
                row = StepRow(target_id, r[1], r[2], r[3], r[4], r[5], r[6], r[8], r[9])
                conn.execute(
                    f"INSERT INTO steps ({_STEP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (target_id, r[1], r[2], r[3], r[4], r[5], r[6], _step_checksum(row), r[8],
                     r[9]),
                )
            return len(rows)

        return self.write(copy)

    def delete_finished(self, before: float) -> int:
        """Delete terminal workflows last updated before ``before`` and their steps (gc)."""

        def delete(conn: apsw.Connection) -> int:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT workflow_id FROM workflows WHERE status != 'pending' "
                    "AND updated_at < ?",
                    (before,),
                )
            ]
            for wid in ids:
                conn.execute("DELETE FROM steps WHERE workflow_id = ?", (wid,))
                conn.execute("DELETE FROM workflows WHERE workflow_id = ?", (wid,))
            return len(ids)

        return self.write(delete)

    def quick_check(self) -> str:
        """SQLite's ``PRAGMA quick_check`` result ("ok" when sound), damage as an answer.

        Damage bad enough that SQLite refuses to run the check (the schema page itself) is
        reported as text too, so a caller deciding "may I write?" needs one test.
        """
        def check(conn: apsw.Connection) -> str:
            try:
                return "\n".join(r[0] for r in conn.execute("PRAGMA quick_check"))
            except (apsw.CorruptError, apsw.NotADBError) as exc:
                return f"{type(exc).__name__}: {exc}"

        return self.read(check)

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` result ("ok" when sound)."""
        return self.read(
            lambda conn: "\n".join(r[0] for r in conn.execute("PRAGMA integrity_check"))
        )


# -- helpers ------------------------------------------------------------------------------


def _insert_step_rows(conn: apsw.Connection, ops: list[_Write]) -> list[_Write] | None:
    """Write the step rows of ``ops`` in one statement; return the other ops, still to run.

    Every statement gives the GIL up and must take it back while the batch's writers and
    everyone else compete for it, so a batch of step rows costs one statement, not one each.
    Rows go before the batch's other writes, which cannot need them: a workflow's steps are
    written only after its start is durable, and nothing else reads step rows. None (the
    caller rolls back) when a row was not written as such: fenced, or already recorded.
    """
    rows = [op for op in ops if op.step_row is not None]
    if len(rows) < 2:
        return ops
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start:start + _ROWS_PER_INSERT]
        size = _STEP_ROW_BUCKETS[bisect.bisect_left(_STEP_ROW_BUCKETS, len(chunk))]
        params = [value for op in chunk for value in op.step_row]  # type: ignore[union-attr]
        params += [None] * (_STEP_ROW_WIDTH * (size - len(chunk)))  # padding: never written
        conn.execute(_insert_steps_sql(size), params)
        if conn.changes() != len(chunk):
            return None
    return [op for op in ops if op.step_row is None]


def _apply(conn: apsw.Connection, ops: list[_Write]) -> _Write | None:
    """Run each write's statements; stop at the first one refused and return it."""
    for op in ops:
        try:
            op.value = op.fn(conn)
        except DurableError as exc:
            op.error = exc
            return op
    return None


def _scalar(conn: apsw.Connection, sql: str) -> Any:
    """The first column of the first row of ``sql``."""
    return conn.execute(sql).fetchall()[0][0]


def _refuse_stale_step(conn: apsw.Connection, row: StepRow, total: int, owner: str) -> None:
    """A finished row already holds this step: refuse the write unless it is the same outcome.

    The second fence: a process that lost a workflow and claimed it back keeps its owner token,
    so its stale run passes the owner check; a step someone else completed meanwhile must not
    be acknowledged to that run as if its own outcome had been written.
    """
    found = conn.execute(
        "SELECT checksum FROM steps WHERE workflow_id = ? AND step = ?",
        (row.workflow_id, row.step),
    ).fetchall()
    if found and found[0][0] != total:
        raise OwnershipLostError(
            f"step {row.step} of workflow {row.workflow_id!r} is already recorded with another "
            f"outcome: this run of it is stale (its owner {owner!r} lost the workflow and took "
            "it back meanwhile). The write was refused; the workflow continues from the journal."
        )


def _fetch_workflow(conn: apsw.Connection, workflow_id: str) -> WorkflowRow | None:
    found = conn.execute(
        f"SELECT {_WORKFLOW_COLUMNS} FROM workflows WHERE workflow_id = ?", (workflow_id,)
    ).fetchall()
    return _workflow_row(found[0]) if found else None


def _fetch_steps(conn: apsw.Connection, workflow_id: str, path: str) -> list[StepRow]:
    rows = []
    for r in conn.execute(
        f"SELECT {_STEP_COLUMNS} FROM steps WHERE workflow_id = ? ORDER BY step", (workflow_id,)
    ):
        row = StepRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[8], r[9])
        if _step_checksum(row) != r[7]:
            raise JournalCorruptError(
                f"step {row.step} of workflow {workflow_id!r} in {path} fails its checksum: the "
                "file was modified outside SQLite or the disk is failing. Restore a backup, or "
                "fork the workflow from before that step."
            )
        rows.append(row)
    return rows


def _workflow_row(r: Sequence[Any]) -> WorkflowRow:
    (wid, name, status, inputs, output, error, total, created, updated, version, parent, owner,
     attempts, deadline, cancel, detached) = r
    if _workflow_checksum(wid, name, inputs, output, error) != total:
        raise JournalCorruptError(
            f"workflow {wid!r} fails its checksum: the file was modified outside SQLite or the "
            "disk is failing. Restore a backup of the journal."
        )
    return WorkflowRow(wid, name, status, inputs, output, error, created, updated, version,
                       parent, owner, attempts, deadline, bool(cancel), bool(detached))


def _fenced(conn: apsw.Connection, workflow_id: str, owner: str | None) -> WorkflowRow:
    row = _fetch_workflow(conn, workflow_id)
    if row is None:
        raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
    if owner is not None and row.owner is None:
        raise OwnershipLostError(
            f"workflow {workflow_id!r} is no longer owned by {owner!r}: it was cancelled, or "
            "its App closed. The write was refused."
        )
    if owner is not None and row.owner != owner:
        raise OwnershipLostError(
            f"workflow {workflow_id!r} is now owned by {row.owner!r}, not {owner!r}: this "
            "process was presumed dead (its lease lapsed) and another took the workflow over. "
            "The write was refused; the new owner continues the workflow."
        )
    return row


def _rollback(conn: apsw.Connection) -> None:
    try:
        if not conn.get_autocommit():
            conn.execute("ROLLBACK")
    except apsw.Error:
        pass


def _create_private(path: str) -> None:
    """Create a missing journal file with mode 0600 (SQLite copies it to -wal and -shm)."""
    if path == ":memory:" or path.startswith("file:"):
        return
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError as exc:  # a journal error naming the fix, never a raw OS error
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise JournalReadOnlyError(
                f"cannot create the journal {path}: its directory {folder} does not exist. "
                "Create the directory, or point the App at a path in an existing one."
            ) from exc
        raise JournalReadOnlyError(
            f"cannot create the journal {path} ({exc.strerror or exc}). Check that its "
            "directory is writable, or point the App at another path."
        ) from exc
    os.close(fd)


def _check_header(path: str) -> None:
    """Refuse a file shorter than its own header says: truncation SQLite would find late."""
    try:
        with open(path, "rb") as f:
            header = f.read(100)
        size = os.path.getsize(path)
    except OSError:
        return
    if not header:
        return
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        raise JournalCorruptError(
            f"{path} is not an SQLite database (bad header): it is damaged or another kind of "
            "file. Point the App at a new path; this file was not modified."
        )
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    pages = struct.unpack(">I", header[28:32])[0]
    # A checkpoint cut part-way leaves the header counting pages the file does not hold yet;
    # the WAL (or a hot rollback journal) still has them, and SQLite restores them on open.
    recoverable = any(_size(p) > 0 for p in (f"{path}-wal", f"{path}-journal"))
    if not recoverable and ((page_size and size % page_size) or pages * page_size > size):
        raise JournalCorruptError(
            f"{path} is truncated: its header describes {pages} pages of {page_size} bytes but "
            f"the file holds {size} bytes. Restore a backup; this file was not modified."
        )


def _size(path: str) -> int:
    """The size of ``path``, 0 if it is missing (another process may delete it meanwhile)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _translate(exc: apsw.Error, path: str) -> JournalError:
    """Map an apsw error to the litedurable exception that says what to do about it."""
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, apsw.FullError):
        return JournalFullError(
            f"{path}: the disk (or the database's page limit) is full ({detail}). Free space "
            "and retry; everything committed before is intact."
        )
    if isinstance(exc, apsw.BusyError | apsw.LockedError):
        return JournalLockedError(
            f"{path} stayed locked by another connection past the busy timeout ({detail}). "
            "Another process holds a long write transaction; retry, or raise "
            "App(busy_timeout=...)."
        )
    if isinstance(exc, apsw.ReadOnlyError | apsw.PermissionsError | apsw.CantOpenError):
        return JournalReadOnlyError(
            f"{path} cannot be written or opened ({detail}). Check that the file and its "
            "directory are writable (SQLite needs to create -wal and -shm files beside it)."
        )
    if isinstance(exc, apsw.CorruptError | apsw.NotADBError):
        return JournalCorruptError(
            f"{path} is damaged or not a database ({detail}). Restore a backup; litedurable "
            "did not modify it."
        )
    return JournalError(f"{path}: {detail}")


class _translated:
    """Context manager turning apsw errors into ``JournalError`` subclasses."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if isinstance(exc, apsw.Error):
            raise _translate(exc, self.path) from exc
