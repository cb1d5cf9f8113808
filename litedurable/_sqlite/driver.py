"""The SQLite file: opening it, checking and migrating it, its connections, its errors.

One ``Driver`` per open journal holds a writer connection (used only by the group commit, in
``commit.py``) and a small pool of reader connections. It refuses files that are not
litedurable journals (another program's database, a newer schema, a truncated file) before
touching them, migrates older schemas in one transaction, and turns every apsw error into the
``JournalError`` subclass that says what to do about it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import struct
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import apsw

from .._errors import (
    AppClosedError,
    JournalCorruptError,
    JournalError,
    JournalFullError,
    JournalLockedError,
    JournalReadOnlyError,
    JournalVersionError,
)
from .._faults import Faults
from .._storage import Durability
from . import sql

log = logging.getLogger("litedurable")

T = TypeVar("T")

MAX_READERS = 4
"""Most reader connections one journal opens. WAL readers do not block one another, so a few
let concurrent reads (a recovery resuming workflows on many run threads) proceed in parallel
instead of queueing on one connection; more than the cores the GIL leaves SQLite to run on
buys nothing."""

_open_drivers: weakref.WeakSet[Driver] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # SQLite connections must not cross fork(); poison the child's copies so it gets a clear
    # error instead of corrupting locks the parent still holds.
    for driver in list(_open_drivers):
        driver.forked = True


os.register_at_fork(after_in_child=_after_fork_in_child)


class Driver:
    """The connections to one journal file.

    Args:
        path: the database file (created with mode 0600 if missing).
        durability: ``"full"`` (``synchronous=FULL``: survives power loss) or ``"normal"``
            (survives process crashes; a power cut may roll back the last commits).
        busy_timeout: seconds to wait for another process's write lock before
            ``JournalLockedError``.
        vfs: an apsw VFS name to open the file through (fault injection, power-loss tests).
        readonly: open with ``SQLITE_OPEN_READONLY`` (no writer connection). On a read-only
            file system the file is read as immutable (SQLite cannot create the ``-shm`` a
            WAL file otherwise needs).
        faults: the App's fault seam (a killed App's journal refuses every use).
    """

    def __init__(
        self,
        path: str,
        *,
        durability: Durability,
        busy_timeout: float,
        vfs: str | None,
        readonly: bool,
        faults: Faults,
    ) -> None:
        if durability not in ("full", "normal"):
            raise ValueError(f"durability must be 'full' or 'normal', not {durability!r}")
        if (not isinstance(busy_timeout, int | float) or isinstance(busy_timeout, bool)
                or not busy_timeout >= 0):  # also refuses NaN
            raise ValueError(f"busy_timeout must be seconds >= 0, got {busy_timeout!r}")
        self.path = path
        self.readonly = readonly
        self.faults = faults
        self.forked = False
        self.schema = sql.SCHEMA_VERSION  # the file's schema, once ``check_and_migrate`` ran
        self.closed = False
        # Reader connections: ``reader`` is the first; more open on demand up to
        # ``max_readers`` (see ``_take_reader``). ``_lent`` counts readers in use or opening.
        self._read_cond = threading.Condition()
        self._idle_readers: list[apsw.Connection] = []
        self._extra_readers: list[apsw.Connection] = []
        self.max_readers = MAX_READERS
        self._lent = 0
        self._opening = 0
        self._sync: str | None = None
        self._busy_ms = int(min(busy_timeout * 1000, 2**31 - 1))  # SQLite takes a C int
        self._vfs = vfs
        # SQLITE_FCNTL_HAS_MOVED writes its answer here (see ``moved``).
        self._has_moved = ctypes.c_int(0)
        self._has_moved_at = ctypes.addressof(self._has_moved)
        self.abspath = os.path.abspath(path)  # the message must not follow a later chdir
        self._wal_path = self.abspath + "-wal"
        self._immutable = False  # read-only file system: see ``_may_read_immutable``
        writer: apsw.Connection | None = None
        reader: apsw.Connection | None = None
        try:
            with translated(path):
                if not readonly and vfs is None:
                    _create_private(path)
                writer = None if readonly else self.connect(readonly=False)
                reader = self.connect(readonly=readonly)
                self.writer, self.reader = writer, reader
                try:
                    self._check_and_migrate_patiently(durability, busy_timeout)
                except apsw.CantOpenError:
                    if writer is not None or not self._may_read_immutable():
                        raise
                    reader.close()
                    self._immutable = True
                    reader = self.reader = self.connect(readonly=True)
                    self._check_and_migrate_patiently(durability, busy_timeout)
                self._idle_readers.append(reader)
        except BaseException:
            # A refused file (foreign, newer, damaged, locked) is left with no handle open on it.
            for conn in (writer, reader):
                if conn is not None:
                    conn.close()
            raise
        _open_drivers.add(self)

    # -- opening --------------------------------------------------------------------------

    def connect(self, *, readonly: bool) -> apsw.Connection:
        flags = apsw.SQLITE_OPEN_READONLY if readonly else (
            apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
        )
        name = self.path
        if self._immutable:
            name = f"file:{urllib.parse.quote(self.abspath)}?immutable=1"
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
        folder = os.path.dirname(self.abspath)
        return _size(f"{self.path}-wal") == 0 and not os.access(folder, os.W_OK)

    def _check_and_migrate_patiently(self, durability: Durability, busy_timeout: float) -> None:
        """``check_and_migrate``, again on SQLITE_BUSY until ``busy_timeout`` has passed.

        Some statements of a first open get SQLITE_BUSY at once, without SQLite's busy handler:
        ``PRAGMA journal_mode=WAL`` while another process is switching the same new file to
        WAL, or reading the schema while it runs WAL recovery. Every step of the check re-reads
        what it decides on, so running it again is safe.
        """
        deadline = time.monotonic() + busy_timeout
        pause = 0.001
        while True:
            try:
                self.check_and_migrate(durability)
                return
            except apsw.BusyError:
                if time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def check_and_migrate(self, durability: Durability) -> None:
        """Refuse a file that is not ours (or is newer); set WAL and ``synchronous``; migrate."""
        conn = self.writer or self.reader
        if self._vfs is None:
            _check_header(self.path)
        app_id: int
        version: int
        tables: int
        app_id, version, tables = conn.execute(sql.IDENTIFY).fetchall()[0]  # type: ignore[assignment]
        if app_id != sql.APPLICATION_ID and (app_id != 0 or tables):
            raise JournalVersionError(
                f"{self.path} is an SQLite database of another program (application_id "
                f"{app_id:#x}, {tables} schema objects), not a litedurable journal. Point the "
                "App at a new file; this one was not modified."
            )
        if version > sql.SCHEMA_VERSION:
            raise JournalVersionError(
                f"{self.path} was written by a newer litedurable (journal schema {version}, this "
                f"version reads up to {sql.SCHEMA_VERSION}). Upgrade litedurable; the file was "
                "not modified."
            )
        if self.writer is None:
            # An older schema today's reads work on is read as it is (it cannot be migrated
            # here); refusing it made every read command refuse every journal of the release
            # before, until an App opened it read-write.
            if version < sql.READABLE_FROM:
                raise JournalReadOnlyError(
                    f"{self.path} needs a schema upgrade ({version} -> {sql.SCHEMA_VERSION}) but "
                    "was opened read-only. Open it once read-write to migrate it."
                )
            self.schema = version if tables else sql.SCHEMA_VERSION
            return
        sync = "FULL" if durability == "full" else "NORMAL"
        if self.faults.broken("no_sync"):  # a negative control's broken engine
            sync = "OFF"
        mode: str = scalar(conn, sql.JOURNAL_MODE_WAL)
        if mode.lower() != "wal":
            raise JournalError(
                f"{self.path} could not be switched to WAL mode (SQLite kept {mode!r}); the "
                "file system may not support the shared memory WAL needs (a network share?). "
                "Put the journal on a local disk."
            )
        conn.execute(sql.SYNCHRONOUS.format(level=sync))
        self.reader.execute(sql.SYNCHRONOUS.format(level=sync))
        self._sync = sync  # for the readers opened later
        if version < sql.SCHEMA_VERSION:
            # One IMMEDIATE transaction, version re-read inside it: two processes opening a new
            # file at once migrate it once, and a crash mid-migration leaves the old version.
            conn.execute("BEGIN IMMEDIATE")
            try:
                current: int = scalar(conn, sql.USER_VERSION)
                for migration in sql.MIGRATIONS[current:]:
                    conn.execute(migration)
                conn.execute(sql.SET_APPLICATION_ID)
                conn.execute(sql.SET_USER_VERSION)
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise

    # -- use ------------------------------------------------------------------------------

    def usable(self) -> None:
        """Raise why this journal may not be used now (killed, forked, closed), if it may not."""
        self.faults.check_alive()
        if self.forked:
            raise JournalError(
                f"this journal ({self.path}) was opened before fork(); SQLite connections cannot "
                "be used in a child process. Create a new App in the child."
            )
        if self.closed:
            raise AppClosedError(f"the journal {self.path} is closed; launch a new App to use it")

    def read(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run ``fn`` on a reader connection of its own (sees only committed data).

        Each statement ``fn`` runs is its own read transaction, as on any autocommit
        connection.
        """
        conn = self._take_reader()
        try:
            with translated(self.path):
                return fn(conn)
        finally:
            with self._read_cond:
                self._idle_readers.append(conn)
                self._lent -= 1
                if self.closed:
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
                self.usable()
                if self._idle_readers:
                    self._lent += 1
                    return self._idle_readers.pop()  # the most recently used: warm cache
                if 1 + len(self._extra_readers) + self._opening < self.max_readers:
                    self._lent += 1
                    self._opening += 1
                    break
                self._read_cond.wait()
        conn: apsw.Connection | None = None
        try:
            conn = self.connect(readonly=self.readonly)
            if self._sync is not None:
                conn.execute(sql.SYNCHRONOUS.format(level=self._sync))
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
            self.max_readers = 1 + len(self._extra_readers) + self._opening
            self._lent -= 1
            self._read_cond.notify_all()
        return self._take_reader()

    # -- the path -------------------------------------------------------------------------

    def moved(self) -> str | None:
        """Why the path no longer names the file this journal opened, or None if it does.

        Asked of SQLite (``SQLITE_FCNTL_HAS_MOVED``: the unix VFS compares the inode it opened
        with a ``stat`` of the path it opened, made absolute at open, so a later ``chdir`` does
        not matter). It runs once per commit, about 1 us, half of an ``os.stat`` from Python.
        A VFS that does not answer (a test's in-memory one) is taken as "not moved".
        """
        writer = self.writer
        assert writer is not None
        if not writer.file_control("main", apsw.SQLITE_FCNTL_HAS_MOVED, self._has_moved_at):
            return None
        if not self._has_moved.value:
            # SQLite keeps writing to the -wal it has open; if the path's one was deleted, every
            # commit since lives only in an unlinked file and a crash loses it (and what came
            # before, that was never checkpointed). ``access`` answers what ``exists`` would
            # (the path resolves) without building a ``stat_result``, a third of the check.
            if os.access(self._wal_path, os.F_OK):
                return None
            return (
                f"the journal's write-ahead log {self.path}-wal was deleted while this App had "
                "it open. The write was refused: it would have been lost at the next crash. "
                "Close this App (its close writes what the log held into the journal) and "
                "launch a new one; never delete -wal or -shm files of an open journal."
            )
        if os.path.lexists(self.abspath):
            what = "replaced by another file (a backup restored, or the file moved away)"
        else:
            what = "deleted"
        return (
            f"the journal file {self.path} was {what} while this App had it open. The write "
            "was refused: nothing this App writes can reach the file now at that path. Close "
            "this App and launch a new one on the file you mean to use (restore a backup "
            "first if the file was deleted by mistake)."
        )

    # -- closing --------------------------------------------------------------------------

    def close(self, *, gone: bool) -> None:
        """Close every connection (the group commit has stopped; ``closed`` is set).

        ``gone``: the path was found deleted or replaced, so the WAL is emptied into the file
        it belongs to first. A checkpoint that fails as the last connection closes (disk full)
        loses nothing (the WAL keeps every commit, and the next open replays it), so it is
        logged, not raised.
        """
        self.closed = True
        self._drain_wal_if_gone(gone)
        failure: apsw.Error | None = None
        with self._read_cond:
            while self._lent:  # reads that began before the close finish first
                self._read_cond.wait()
            # The first reader closes last, as it did when it was the only one: the last
            # connection to close checkpoints the WAL.
            for conn in (*self._extra_readers, self.writer, self.reader):
                if conn is None:
                    continue
                try:
                    conn.close()
                except apsw.Error as exc:
                    failure = failure or exc
                    conn.close(True)  # force: the handle is released whatever SQLite says
        _open_drivers.discard(self)
        if failure is not None:
            log.warning("litedurable: the final checkpoint of %s failed (%s); nothing is lost, "
                        "the next open replays the WAL", self.path, translate(failure, self.path))

    def _drain_wal_if_gone(self, gone: bool) -> None:
        """Empty the WAL into the file we opened if the path now names another file (or none).

        SQLite does not checkpoint on close once the file has moved, and leaves the WAL behind:
        the next open of the path would replay this file's pages over the one now there (a
        backup restored while the App ran). A ``TRUNCATE`` checkpoint writes them into the
        file they belong to, wherever it went, and leaves an empty WAL. A killed App (a
        simulated crash) writes nothing, as a dead process would not.
        """
        if self.writer is None or self.faults.dead or self.forked:
            return
        if not gone and self.moved() is None:
            return
        try:
            self.writer.execute(sql.CHECKPOINT_TRUNCATE)
        except apsw.Error as exc:
            log.warning("litedurable: %s was deleted or replaced while open, and its WAL could "
                        "not be emptied (%s); delete %s-wal before opening the path again",
                        self.path, translate(exc, self.path), self.path)


# -- helpers ------------------------------------------------------------------------------


def scalar(conn: apsw.Connection, statement: str) -> Any:
    """The first column of the first row of ``statement``."""
    return conn.execute(statement).fetchall()[0][0]


def rollback(conn: apsw.Connection) -> None:
    """Roll back the transaction ``conn`` has open, if any; never raises."""
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


def translate(exc: apsw.Error, path: str) -> JournalError:
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


class translated:
    """Context manager turning apsw errors into ``JournalError`` subclasses."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if isinstance(exc, apsw.Error):
            raise translate(exc, self.path) from exc
