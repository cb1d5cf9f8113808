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
  a lost connection raises ``OutcomeUnknown`` for the caller to re-read (``reread``). The
  step writer runs its statements so on a connection of its own (``own=True``).

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

import contextlib
import logging
import re
import select
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import psycopg.errors
import psycopg_pool
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict

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
from .._storage import Durability, NoJournalError
from . import sql

log = logging.getLogger("litedurable")

T = TypeVar("T")
Connection = psycopg.Connection[tuple[Any, ...]]

MAX_CONNECTIONS = 16
"""Most pooled connections one journal opens (the listener and the step writer's own are two
more)."""
FALLBACK_POLL = 1.0
"""Seconds after which ``changed_elsewhere`` says "changed" without a notification: the most a
lost notification delays a waiter."""
RETRIES = 20
"""Times a transaction is run again after a deadlock or serialization failure."""
CONNECT_TIMEOUT = 5
"""Seconds a new connection may take (libpq's ``connect_timeout``; the DSN's own wins): an
App or command opened on a server that cannot be reached fails after this long at most."""
PROBE_AFTER = 1.0
"""Seconds a call waits for a pooled connection before it tries a new one of its own: a server
that went away is reported then, within about ``PROBE_AFTER + CONNECT_TIMEOUT`` seconds (a
pool that is only busy is waited for up to the driver's ``timeout``)."""
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
              "keepalives_count": 3, "tcp_user_timeout": 30_000}
"""libpq's TCP settings (the DSN's own win): a connection whose server or network vanished
without a word (a pulled cable, a frozen host) is found dead in about 30 s, instead of when
the kernel gives up (hours); the call on it then re-reads, as on any lost connection."""
RECONNECT_TIMEOUT = 10.0
"""Seconds the pool keeps retrying a lost connection (backing off) before it gives up and
connects afresh on the next request: bounds how long after a server comes back a pool whose
connections were all lost still waits to reconnect."""
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")


class SchemaNameError(JournalError, ValueError):
    """The schema name cannot be used. A ``JournalError``, so the CLI reports it as one (not a
    traceback); a ``ValueError`` as before."""


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


def describe(dsn: str, schema: str) -> str:
    """The journal for messages: ``postgresql://user@host:port/db (schema name)``, from a URL
    or a ``key=value`` DSN alike; never the password (nor any other connection option).
    ``litedurable._backends.describe_location`` says a URL the same way without psycopg."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:  # not a DSN at all: opening it fails and says so
        return f"{redact(dsn)} (schema {schema})"
    user, port, dbname = (str(params.get(k) or "") for k in ("user", "port", "dbname"))
    host = str(params.get("host") or params.get("hostaddr") or "")
    where = f"{user}@" if user else ""
    if host and ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address, as a URL writes it
    where += f"{host}{f':{port}' if port else ''}/{dbname}"
    return f"postgresql://{where} (schema {schema})"


class Driver:
    """The connections to one PostgreSQL journal (a schema of a database).

    Args:
        dsn: a libpq connection string or ``postgresql://`` URL.
        schema: the schema holding the tables (created if missing); a lowercase identifier.
        durability: ``"full"`` (``synchronous_commit=on``: a commit is acknowledged once its
            WAL is flushed on the server, so it survives a server crash or power loss) or
            ``"normal"`` (``off``: the server may lose the last commits, up to about three
            times ``wal_writer_delay``, if it crashes; never a half-written transaction).
        timeout: seconds to wait for a pooled connection before ``JournalLockedError``
            (while the pool is busy: a server that cannot be reached is reported sooner, see
            ``PROBE_AFTER``).

    Opening fails within ``CONNECT_TIMEOUT`` seconds (or the DSN's ``connect_timeout``) when
    the server cannot be reached, with a ``JournalError`` that names the server and the fix.
    A call made while the server is away raises ``JournalError`` within about
    ``PROBE_AFTER + CONNECT_TIMEOUT`` seconds; once it is back the pool reconnects (within
    about ``RECONNECT_TIMEOUT``) and calls work again.
    """

    def __init__(self, dsn: str, *, schema: str = "litedurable",
                 durability: Durability = "full", timeout: float = 30.0,
                 max_connections: int = MAX_CONNECTIONS, faults: Faults | None = None,
                 readonly: bool = False) -> None:
        self.path = describe(dsn, schema)
        if not _IDENTIFIER.match(schema):
            raise SchemaNameError(
                f"the schema name {schema!r} of {self.path} is not a lowercase SQL identifier "
                "(a letter or _, then letters, digits or _, 48 at most): pick another with "
                "?schema=name")
        self.dsn = dsn
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
        self.timeout = timeout
        try:
            given = conninfo_to_dict(dsn)
        except psycopg.Error as exc:
            raise JournalError(f"{self.path} is not a PostgreSQL connection string or URL "
                               f"({exc}); check the DSN") from None
        self.connect_timeout = float(given.get("connect_timeout") or CONNECT_TIMEOUT)
        self._connect_kwargs: dict[str, Any] = {
            key: value for key, value in {"connect_timeout": CONNECT_TIMEOUT, **KEEPALIVES}.items()
            if key not in given}
        try:
            if readonly:
                self._check_version()
            else:
                self._migrate()
            self.pool: psycopg_pool.ConnectionPool[Connection] = psycopg_pool.ConnectionPool(
                dsn, min_size=1, max_size=max_connections, timeout=timeout,
                kwargs={"autocommit": True, **self._connect_kwargs},
                configure=self._configure, check=_check_pooled, open=False,
                name=f"litedurable.{schema}",
                reconnect_timeout=RECONNECT_TIMEOUT,
            )
            self.pool.open(wait=True, timeout=2 * self.connect_timeout)
        except psycopg_pool.PoolTimeout as exc:  # the server went away after the first connect
            self.pool.close()
            raise self._unreachable(exc) from exc
        except psycopg.Error as exc:
            raise self._unreachable(exc) if _refused(exc) else translate(exc, self.path) from exc
        self._own: psycopg.Cursor[tuple[Any, ...]] | None = None  # see ``autocommit``
        self._changed = threading.Event()
        self._listening = False
        self._listener_conn: Connection | None = None
        self._listener = threading.Thread(target=self._listen, name="litedurable-listen",
                                          daemon=True)
        self._listen_ready = threading.Event()
        self._listener.start()
        # Not listening yet only costs re-reads (``changed_elsewhere`` says True meanwhile).
        self._listen_ready.wait(self.connect_timeout + 1.0)
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

    def _connect(self) -> Connection:
        """A new connection outside the pool (in autocommit), within ``connect_timeout``."""
        return psycopg.connect(self.dsn, autocommit=True, **self._connect_kwargs)

    def _unreachable(self, exc: Exception) -> JournalError:
        """The error for a server that cannot be connected to: where, why, and the fix."""
        why = " ".join(str(exc).split())
        # libpq reports a refused login without an SQLSTATE: its (English) text tells.
        state = getattr(exc, "sqlstate", None) or ""
        if state == "3D000" or re.search(r'database ".*" does not exist', why):
            fix = "create the database (createdb), or check the database name in the DSN"
        elif state.startswith("28") or re.search(
                r'password|role ".*" does not exist|pg_hba\.conf', why):
            fix = ("check the user and password of the DSN (a passfile or PGPASSWORD keeps the "
                   "password out of it)")
        else:
            fix = "is the server running, and reachable from here? check the DSN's host and port"
        return JournalError(f"the PostgreSQL journal {self.path} cannot be reached: {why}; "
                            f"{fix}")

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Connection]:
        """A pooled connection, as ``pool.connection()``, but a server that went away is
        reported (``JournalError``) within about ``PROBE_AFTER + connect_timeout``: after
        ``PROBE_AFTER`` seconds without one, a new connection is tried, and it failing says
        so. A pool that is only busy is waited for, up to ``timeout`` in all
        (``JournalLockedError`` then)."""
        deadline = time.monotonic() + self.timeout
        with contextlib.ExitStack() as stack:  # returns the connection, as pool.connection()
            while True:
                left = deadline - time.monotonic()
                try:
                    conn: Connection = stack.enter_context(
                        self.pool.connection(timeout=max(min(PROBE_AFTER, left), 0.001)))
                    break
                except psycopg_pool.PoolClosed:
                    raise AppClosedError(f"the journal {self.path} is closed") from None
                except psycopg_pool.PoolTimeout:
                    if left <= PROBE_AFTER:
                        raise JournalLockedError(
                            f"no connection to {self.path} came free in {self.timeout:g} s "
                            f"(all {self.pool.max_size} are in use); try again, or use fewer "
                            "threads") from None
                try:
                    self._connect().close()
                except psycopg.Error as exc:
                    raise self._unreachable(exc) from exc
            yield conn

    def _configure(self, conn: Connection) -> None:
        conn.execute(self._format(sql.SET_SEARCH_PATH))
        conn.execute(self._format(sql.SYNCHRONOUS_COMMIT))
        conn.execute(sql.IDLE_IN_TRANSACTION)
        if self.readonly:
            conn.execute(sql.READ_ONLY)

    def _check_version(self) -> None:
        """A read-only open: the schema must be there, at this litedurable's version."""
        with self._connect() as conn:
            exists = conn.execute(sql.VERSION_TABLE_EXISTS, (self.schema,)).fetchone()
            if not (exists and exists[0]):
                raise NoJournalError(
                    f"no litedurable journal in {self.path} (a read-only open does not create "
                    "one): check the database and the schema (?schema=name), or open it "
                    "read-write (an App) to create it")
            found = conn.execute(self._format(sql.SELECT_VERSION)).fetchone()
            version = int(found[0]) if found and found[0] is not None else 0
            if version > sql.SCHEMA_VERSION:
                raise JournalVersionError(
                    f"{self.path} is at version {version}, newer "
                    f"than this litedurable knows ({sql.SCHEMA_VERSION}): upgrade litedurable "
                    "to read it")
            if version != sql.SCHEMA_VERSION:
                raise JournalVersionError(
                    f"{self.path} is at version {version}; this "
                    f"litedurable reads version {sql.SCHEMA_VERSION} (open it read-write with "
                    "the litedurable that wrote it, or a newer one, to migrate it)")
            self.schema_version = version

    def _migrate(self) -> None:
        """Create or migrate the schema in one transaction, under the migration lock."""
        with self._connect() as conn:
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
                        f"{self.path} is at version {version}, "
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
        """Read notifications until closed; reconnect (and report "changed") when cut off.
        While the server is away: one warning, then retries every 2 s at most, quietly."""
        failures = 0
        while not self.closed:
            try:
                with self._connect() as conn:
                    self._listener_conn = conn
                    conn.execute(self._format(sql.LISTEN))
                    self._listening = True
                    self._changed.set()  # anything may have happened while not listening
                    self._listen_ready.set()
                    if failures:
                        log.warning("litedurable: listening to %s again", self.path)
                        failures = 0
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
                failures += 1
                (log.warning if failures == 1 else log.debug)(
                    "litedurable: the LISTEN connection to %s failed (%s); reconnecting",
                    self.path, " ".join(str(exc).split()))
                time.sleep(min(0.5 * failures, 2.0))
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
                with self._connection() as conn:
                    conn.execute(sql.NOTIFY, (self.channel, self.token))
            except Exception as exc:  # psycopg's, or ``_connection``'s JournalError: the
                # thread must outlive a server that is away, or this process never notifies
                # again (the others would see its commits only by their slow poll)
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
                with self._connection() as conn:
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
                with self._connection() as conn, conn.transaction():
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

    def autocommit(self, statement: str, params: Any, *,
                   own: bool = False) -> list[tuple[Any, ...]]:
        """Run one statement as its own transaction (one round trip, no BEGIN or COMMIT): its
        rows. A deadlock or serialization failure runs it again; a lost connection raises
        ``OutcomeUnknown`` (it may have committed: the caller re-reads). Notifies no one.

        ``own``: on the driver's own connection, outside the pool, for the one caller that is
        never concurrent with itself (``commit.StepCommit``: one step write in flight at a
        time). No pool checkout and return, one cursor reused: a step's CPU drops by about a
        quarter. Lost, it is reopened for the next statement."""
        self.writable()
        self.faults.check_alive()
        for attempt in range(RETRIES + 1):
            try:
                if own:
                    return self._own_cursor().execute(statement, params).fetchall()
                with self._connection() as conn:
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

    def _own_cursor(self) -> psycopg.Cursor[tuple[Any, ...]]:
        """The cursor of ``autocommit(own=True)``: opened on first use, and again after its
        connection was lost (a server that cannot be reached is reported as by the pool)."""
        cursor = self._own
        if cursor is not None and not cursor.closed and _still_up(cursor.connection):
            return cursor
        if cursor is not None:
            cursor.connection.close()
        self.usable()
        try:
            conn = self._connect()
        except psycopg.Error as exc:  # nothing was sent: no outcome to re-read
            raise self._unreachable(exc) from exc
        try:
            self._configure(conn)
        except psycopg.Error as exc:
            conn.close()
            raise self._unreachable(exc) from exc
        cursor = self._own = conn.cursor()
        if self.closed:  # ``close`` ran meanwhile, and may not have seen this connection
            conn.close()
            self.usable()
        return cursor

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
        own = self._own
        if own is not None:
            with own.connection.lock:  # after the statement in flight on it, if any: psycopg
                own.connection.close()  # may not close a connection another thread uses
        self._listener.join(5.0)


def lost(exc: psycopg.Error) -> bool:
    """Whether ``exc`` is the connection lost (the server closed it, was shut down, or the
    network failed), rather than an answer from the server about the statement."""
    state = exc.sqlstate
    return (isinstance(exc, psycopg.OperationalError) and state is None) or (
        state is not None and (state.startswith("08") or state in ("57P01", "57P02", "57P03")))


def _still_up(conn: Connection) -> bool:
    """Whether an idle connection is still up, without a round trip: a server that closed or
    terminated it (a restart, ``pg_terminate_backend``, an idle timeout) left its last words
    and an end of file to read, where a statement sent would be lost, its outcome unknown.
    Nothing else comes unasked to an idle connection that does not LISTEN but a rare notice:
    replacing it then costs one reconnection. One ``poll`` system call."""
    if conn.broken:
        return False
    try:
        watch = select.poll()
        watch.register(conn.fileno(), select.POLLIN)
        return not watch.poll(0)
    except (OSError, ValueError, psycopg.Error):
        return False


def _check_pooled(conn: Connection) -> None:
    """The pool's check of a connection before it hands it out: a dead one is closed (so the
    pool discards it, not takes it back) and replaced."""
    if not _still_up(conn):
        conn.close()
        raise psycopg.OperationalError("the server closed this idle connection")


def _refused(exc: psycopg.Error) -> bool:
    """Whether ``exc`` is a connection that could not be made (no server answered, or it
    refused the user or database): an ``OperationalError`` raised by ``connect``."""
    return isinstance(exc, psycopg.OperationalError) and (
        exc.sqlstate is None or exc.sqlstate.startswith(("08", "28", "3D", "57P")))


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
