"""The PostgreSQL database: its connections, its schema and migrations, its errors, its news.

One ``Driver`` per open journal holds a psycopg connection pool (every connection's
``search_path`` set to the journal's schema, and ``synchronous_commit`` set from the
durability) and one listener connection (``LISTEN`` on the schema's channel, read by a daemon
thread), and runs every transaction:

* ``read(fn)``: ``fn`` on a pooled connection in autocommit (each statement its own
  snapshot, as SQLite's readers see the last commit).
* ``write(fn, verify)``: ``fn`` in one READ COMMITTED transaction. A deadlock or
  serialization failure runs it again. A COMMIT whose outcome is unknown (the connection was
  lost while committing) is re-read with ``verify`` on another connection, never assumed:
  found, the write stands; not found (or no ``verify``), ``JournalError`` says so.
* ``autocommit(statement, params)``: one statement as its own transaction (one round trip);
  a lost connection raises ``OutcomeUnknown`` for the caller to re-read (``reread``).

Other processes learn of our commits by ``NOTIFY``, sent after them: ``announce`` asks the
notifier thread for one notification, which covers every write committed before it is sent
(many writes, one notification). Not inside the writes: a NOTIFY holds a database-wide lock
from its commit to the end of its transaction, and every write notifying would commit one
after another, each waiting for the previous one's WAL flush. A notification lost (a process
killed between its commit and its notification) costs the listeners a slow poll:
``changed_elsewhere`` says "changed" at least every ``FALLBACK_POLL`` seconds.

The schema is created and migrated in one transaction under a transaction-level advisory lock
(two Apps opening a new database at once do not both migrate); a schema newer than this
litedurable knows is refused with ``JournalVersionError``. Every psycopg error is turned into
the ``JournalError`` subclass that says what to do about it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import psycopg.errors
import psycopg_pool
from psycopg import sql as pgsql

from .._errors import (
    AppClosedError,
    DurableError,
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
Connection = psycopg.Connection[tuple[Any, ...]]

MAX_CONNECTIONS = 16
"""Most pooled connections one journal opens (the listener is one more)."""
FALLBACK_POLL = 1.0
"""Seconds after which ``changed_elsewhere`` says "changed" without a notification: the most a
lost notification delays a waiter."""
RETRIES = 20
"""Times a transaction is run again after a deadlock or serialization failure."""
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")


class Retry(Exception):
    """Raised inside ``write``'s function: run the whole transaction again (a race lost)."""


class OutcomeUnknown(Exception):
    """``autocommit``'s statement may or may not have committed: the connection was lost while
    it ran. ``error`` is the psycopg error; re-read the write (``Driver.reread``)."""

    def __init__(self, error: psycopg.Error) -> None:
        super().__init__(str(error))
        self.error = error


def redact(dsn: str) -> str:
    """The DSN without its password, for messages."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", re.sub(r"password=\S+", "password=***",
                                                              dsn))


class Driver:
    """The connections to one PostgreSQL journal (a schema of a database).

    Args:
        dsn: a libpq connection string or ``postgresql://`` URL.
        schema: the schema holding the tables (created if missing); a lowercase identifier.
        durability: ``"full"`` (``synchronous_commit=on``: a commit is acknowledged once its
            WAL is flushed on the server, so it survives a server crash or power loss) or
            ``"normal"`` (``off``: the server may lose the last commits, up to about three
            times ``wal_writer_delay``, if it crashes; never a half-written transaction).
        timeout: seconds to wait for a pooled connection before ``JournalLockedError``.
    """

    def __init__(self, dsn: str, *, schema: str = "litedurable",
                 durability: Durability = "full", timeout: float = 30.0,
                 max_connections: int = MAX_CONNECTIONS, faults: Faults | None = None,
                 readonly: bool = False) -> None:
        if not _IDENTIFIER.match(schema):
            raise ValueError(f"schema must be a lowercase SQL identifier, not {schema!r}")
        self.dsn = dsn
        self.path = redact(dsn)
        self.schema = schema
        self.channel = f"litedurable_{schema}"
        self.token = uuid.uuid4().hex  # this journal's notifications carry it
        self.closed = False
        self.readonly = readonly
        self.faults = faults or Faults()
        # Every pooled connection may be dead at once (the server restarted, or terminated
        # them): a lost one is replaced, up to this many times, before an error is reported.
        self._redials = max_connections + 1
        self._level = "on" if durability == "full" else "off"
        try:
            if readonly:
                self._check_version()
            else:
                self._migrate()
            self.pool: psycopg_pool.ConnectionPool[Connection] = psycopg_pool.ConnectionPool(
                dsn, min_size=1, max_size=max_connections, timeout=timeout,
                kwargs={"autocommit": True}, configure=self._configure, open=False,
                name=f"litedurable.{schema}",
            )
            self.pool.open(wait=True, timeout=timeout)
        except psycopg.Error as exc:
            raise translate(exc, self.path) from exc
        except psycopg_pool.PoolTimeout as exc:
            raise JournalError(f"cannot connect to {self.path}: {exc}") from exc
        self._changed = threading.Event()
        self._listening = False
        self._listener_conn: Connection | None = None
        self._listener = threading.Thread(target=self._listen, name="litedurable-listen",
                                          daemon=True)
        self._listen_ready = threading.Event()
        self._listener.start()
        self._listen_ready.wait(timeout)
        self._last_change = time.monotonic()
        self._news = threading.Event()  # set: a commit of ours awaits its notification
        self._notifier = threading.Thread(target=self._notify_loop, name="litedurable-notify",
                                          daemon=True)
        self._notifier.start()

    # -- setup --------------------------------------------------------------------------

    def _format(self, statement: str) -> pgsql.Composed:
        return pgsql.SQL(statement).format(
            schema=pgsql.Identifier(self.schema), channel=pgsql.Identifier(self.channel),
            level=pgsql.SQL(self._level))

    def _configure(self, conn: Connection) -> None:
        conn.execute(self._format(sql.SET_SEARCH_PATH))
        conn.execute(self._format(sql.SYNCHRONOUS_COMMIT))
        conn.execute(sql.IDLE_IN_TRANSACTION)
        if self.readonly:
            conn.execute(sql.READ_ONLY)

    def _check_version(self) -> None:
        """A read-only open: the schema must be there, at this litedurable's version."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            exists = conn.execute(sql.VERSION_TABLE_EXISTS, (self.schema,)).fetchone()
            if not (exists and exists[0]):
                raise JournalError(f"no litedurable journal in schema {self.schema!r} of "
                                   f"{self.path} (a read-only open does not create one)")
            found = conn.execute(self._format(sql.SELECT_VERSION)).fetchone()
            version = int(found[0]) if found and found[0] is not None else 0
            if version > sql.SCHEMA_VERSION:
                raise JournalVersionError(
                    f"schema {self.schema!r} of {self.path} is at version {version}, newer "
                    f"than this litedurable knows ({sql.SCHEMA_VERSION}): upgrade litedurable "
                    "to read it")
            if version != sql.SCHEMA_VERSION:
                raise JournalVersionError(
                    f"schema {self.schema!r} of {self.path} is at version {version}; this "
                    f"litedurable reads version {sql.SCHEMA_VERSION} (open it read-write with "
                    "the litedurable that wrote it, or a newer one, to migrate it)")
            self.schema_version = version

    def _migrate(self) -> None:
        """Create or migrate the schema in one transaction, under the migration lock."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            # A quick look first: an up-to-date schema needs no lock and no DDL.
            exists = conn.execute(sql.VERSION_TABLE_EXISTS, (self.schema,)).fetchone()
            if exists and exists[0]:
                found = conn.execute(self._format(sql.SELECT_VERSION)).fetchone()
                if found and found[0] == sql.SCHEMA_VERSION:
                    self.schema_version = sql.SCHEMA_VERSION
                    return
            with conn.transaction():
                conn.execute(sql.MIGRATION_LOCK, (self.schema,))
                conn.execute(self._format(sql.CREATE_SCHEMA))
                conn.execute(self._format(sql.CREATE_VERSION_TABLE))
                found = conn.execute(self._format(sql.SELECT_VERSION)).fetchone()
                version = int(found[0]) if found and found[0] is not None else 0
                if version > sql.SCHEMA_VERSION:
                    raise JournalVersionError(
                        f"schema {self.schema!r} of {self.path} is at version {version}, "
                        f"newer than this litedurable knows ({sql.SCHEMA_VERSION}): upgrade "
                        "litedurable to use it.")
                if version < sql.SCHEMA_VERSION:
                    conn.execute(self._format(sql.SET_SEARCH_PATH))
                    for migration in sql.MIGRATIONS[version:]:
                        conn.execute(migration.encode())
                    conn.execute(self._format(sql.DELETE_VERSION))
                    conn.execute(self._format(sql.INSERT_VERSION), (sql.SCHEMA_VERSION,))
            self.schema_version = sql.SCHEMA_VERSION

    # -- news from other connections ----------------------------------------------------

    def _listen(self) -> None:
        """Read notifications until closed; reconnect (and report "changed") when cut off."""
        while not self.closed:
            try:
                with psycopg.connect(self.dsn, autocommit=True) as conn:
                    self._listener_conn = conn
                    conn.execute(self._format(sql.LISTEN))
                    self._listening = True
                    self._changed.set()  # anything may have happened while not listening
                    self._listen_ready.set()
                    while not self.closed:
                        for note in conn.notifies(timeout=0.5):
                            if self.closed:
                                break
                            if note.payload != self.token:
                                self._changed.set()
            except psycopg.Error as exc:
                self._listening = False
                if self.closed:
                    return
                log.warning("litedurable: the LISTEN connection to %s failed (%s); "
                            "reconnecting", self.path, exc)
                time.sleep(0.5)
            finally:
                self._listening = False
                self._listener_conn = None
        self._listen_ready.set()

    def changed_elsewhere(self) -> bool:
        """True if another connection committed a write since the last call (or the listener
        was cut off, or ``FALLBACK_POLL`` seconds passed, when anything may have happened: the
        caller re-reads the tables)."""
        self.usable()
        now = time.monotonic()
        if (not self._listening or self._changed.is_set()
                or now - self._last_change >= FALLBACK_POLL):
            self._changed.clear()
            self._last_change = now
            return True
        return False

    def announce(self) -> None:
        """A write of ours committed: have the notifier tell the other listeners (soon, and
        once for every write committed before its notification is sent)."""
        self._news.set()

    def _notify_loop(self) -> None:
        """Send one notification per wake-up, until closed (the last one after ``close``)."""
        while True:
            self._news.wait()
            self._news.clear()
            try:
                with self.pool.connection() as conn:
                    conn.execute(sql.NOTIFY, (self.channel, self.token))
            except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
                if not self.closed:  # the listeners fall back to their slow poll
                    log.warning("litedurable: could not notify the other processes on %s of "
                                "a commit (%s)", self.path, exc)
            if self.closed:
                return

    # -- transactions ---------------------------------------------------------------------

    def usable(self) -> None:
        if self.closed:
            raise AppClosedError(f"the journal {self.path} is closed")

    def writable(self) -> None:
        self.usable()
        if self.readonly:
            raise JournalReadOnlyError(
                f"{self.path} was opened read-only; open it read-write to change it")

    def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` on a pooled connection (autocommit: each statement sees the last
        commit)."""
        self.usable()
        for attempt in range(self._redials + 1):
            try:
                with self.pool.connection() as conn:
                    return fn(conn)
            except psycopg.Error as exc:
                if attempt < self._redials and lost(exc):
                    continue  # a pooled connection the server dropped: again, on another
                raise translate(exc, self.path) from exc
            except psycopg_pool.PoolTimeout as exc:
                raise JournalLockedError(
                    f"no connection to {self.path} came free: {exc}") from exc
        raise AssertionError("unreachable")

    def write(self, fn: Callable[[Connection], T],
              verify: Callable[[Connection], bool] | None = None, *,
              notify: bool = True) -> T:
        """Run ``fn`` in one transaction, committed (and durable as configured) when this
        returns; see the module docstring for retries and the unknown-outcome re-read."""
        self.writable()
        self.faults.check_alive()  # a simulated crash (litedurable.testing) writes nothing
        for attempt in range(RETRIES + 1):
            committing = False
            value: T | None = None
            try:
                with self.pool.connection() as conn, conn.transaction():
                    value = fn(conn)
                    committing = True
                if notify:
                    self.announce()
                return value
            except Retry:
                continue
            except (psycopg.errors.DeadlockDetected,
                    psycopg.errors.SerializationFailure) as exc:
                if attempt == RETRIES:
                    raise translate(exc, self.path) from exc
                time.sleep(0.001 * (attempt + 1))
                continue
            except psycopg.Error as exc:
                if not lost(exc):
                    raise translate(exc, self.path) from exc
                if committing:  # the COMMIT was sent, its answer lost: re-read, never assume
                    found: T = self.reread(exc, verify, value)
                    if notify:
                        self.announce()
                    return found
                if attempt < self._redials:  # lost before COMMIT: rolled back; again
                    continue
                raise translate(exc, self.path) from exc
            except psycopg_pool.PoolTimeout as exc:
                raise JournalLockedError(
                    f"no connection to {self.path} came free: {exc}") from exc
        raise JournalError(f"a write to {self.path} lost its race {RETRIES} times; try again")

    def autocommit(self, statement: str, params: Any) -> list[tuple[Any, ...]]:
        """Run one statement as its own transaction (one round trip, no BEGIN or COMMIT): its
        rows. A deadlock or serialization failure runs it again; a lost connection raises
        ``OutcomeUnknown`` (it may have committed: the caller re-reads). Notifies no one."""
        self.writable()
        self.faults.check_alive()
        for attempt in range(RETRIES + 1):
            try:
                with self.pool.connection() as conn:
                    return conn.execute(statement, params).fetchall()
            except (psycopg.errors.DeadlockDetected,
                    psycopg.errors.SerializationFailure) as exc:
                if attempt == RETRIES:
                    raise translate(exc, self.path) from exc
                time.sleep(0.001 * (attempt + 1))
            except psycopg.Error as exc:
                if lost(exc):
                    raise OutcomeUnknown(exc) from exc
                raise translate(exc, self.path) from exc
            except psycopg_pool.PoolTimeout as exc:
                raise JournalLockedError(
                    f"no connection to {self.path} came free: {exc}") from exc
        raise JournalError(f"a write to {self.path} lost its race {RETRIES} times; try again")

    def reread(self, exc: psycopg.Error, verify: Callable[[Connection], bool] | None,
                value: Any) -> Any:
        """After a commit whose outcome is unknown: ``value`` if the write is found, else the
        error (a write without ``verify`` cannot be found, so it is reported failed)."""
        if verify is not None:
            try:
                if self.read(verify):
                    log.warning("litedurable: a commit to %s raised (%s) but the write "
                                "is there; it stands", self.path, exc)
                    return value
            except JournalError as again:
                raise JournalError(
                    f"the outcome of a commit to {self.path} is unknown (the connection was "
                    f"lost while committing: {exc}) and it cannot be re-read now ({again})"
                ) from exc
            raise JournalError(f"a commit to {self.path} failed ({exc}); re-read, the write "
                               "is not there: nothing was written") from exc
        raise JournalError(f"the outcome of a commit to {self.path} is unknown (the "
                           f"connection was lost while committing: {exc})") from exc

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        # The notifier sends a last notification (for the last commits; it also wakes our
        # listener, which then sees ``closed`` and ends) and stops.
        self._news.set()
        self._notifier.join(5.0)
        self.pool.close()
        self._listener.join(5.0)


def lost(exc: psycopg.Error) -> bool:
    """Whether ``exc`` is the connection lost (the server closed it, was shut down, or the
    network failed), rather than an answer from the server about the statement."""
    state = exc.sqlstate
    return (isinstance(exc, psycopg.OperationalError) and state is None) or (
        state is not None and (state.startswith("08") or state in ("57P01", "57P02", "57P03")))


def translate(exc: psycopg.Error, where: str) -> DurableError:
    """The ``JournalError`` that says what a psycopg error means for the journal."""
    what = f"{where}: {type(exc).__name__}: {exc}".rstrip()
    errors = psycopg.errors
    if isinstance(exc, errors.DiskFull | errors.OutOfMemory | errors.ProgramLimitExceeded):
        return JournalFullError(f"the database is full ({what})")
    if isinstance(exc, errors.ReadOnlySqlTransaction | errors.InsufficientPrivilege):
        return JournalReadOnlyError(f"the journal cannot be written ({what})")
    if isinstance(exc, errors.LockNotAvailable | errors.QueryCanceled
                  | errors.DeadlockDetected | errors.SerializationFailure):
        return JournalLockedError(f"a lock was not granted ({what})")
    if isinstance(exc, errors.DataCorrupted | errors.IndexCorrupted):
        return JournalCorruptError(f"the database reports damage ({what})")
    if isinstance(exc, errors.UndefinedTable | errors.UndefinedColumn):
        return JournalVersionError(f"the schema is not what this litedurable expects ({what})")
    if isinstance(exc, psycopg.OperationalError):
        return JournalError(f"the database cannot be reached ({what})")
    return JournalError(what)
