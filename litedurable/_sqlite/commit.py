"""Group commit: many threads' writes, few transactions, and no write ever assumed lost.

Writes use group commit without a hand-off on the quiet path (leader/follower, as databases
flush their logs): a writer that finds no commit in flight commits its own write at once in its
own thread; writers arriving meanwhile queue, and when that commit ends the queue's head is
woken to commit the whole queue in one ``BEGIN IMMEDIATE`` transaction (its step rows in one
statement), and only the writers each commit made durable are woken. A write refused inside a
batch (fenced) fails alone; the others are written again without it. A commit that raised is
"outcome unknown": each write in it is re-read and reported written or not, never assumed lost.
The statements per commit are kept few on purpose: each one releases the GIL and must win it
back from every other thread, which under load costs more than the statement itself.

The engine knows nothing of workflows: a write is a function of the writer connection, with
an optional re-check (``verify``) and, for step rows, the row's parameters (``step_row``) so a
batch can write them all in one statement.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import apsw

from .._errors import DurableError, JournalError, JournalReadOnlyError
from . import sql
from .driver import Driver, rollback, scalar, translate, translated

T = TypeVar("T")


class _Write:
    """One queued write: what to run inside the transaction, and how to re-check it."""

    __slots__ = ("autocommit", "done", "error", "fn", "step_row", "value", "verify", "wake")

    def __init__(
        self,
        fn: Callable[[apsw.Connection], Any],
        verify: Callable[[apsw.Connection], bool] | None,
        autocommit: bool,
        step_row: tuple[Any, ...] | None,
    ) -> None:
        self.fn = fn
        self.verify = verify
        self.autocommit = autocommit
        self.step_row = step_row
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.wake: threading.Lock | None = None  # held while the writer waits its turn


class GroupCommit:
    """The write path of one journal: every write goes through ``write``."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self._mutex = threading.Lock()  # guards the queue and the commit state below
        self._cond = threading.Condition(self._mutex)  # for the rare waits: close(), watcher
        self._queue: list[_Write] = []
        self._committing = False
        self._closing = False  # close() waits for the commit in flight
        self.gone: str | None = None  # the refusal every write gets once the file moved
        self._data_version: int | None = None
        # changed_elsewhere() asks the committer to sample the version right after its commit;
        # both are guarded by ``_mutex`` (the committer writes the sample before it releases
        # the writers, under the mutex, in ``_lead``).
        self._version_wanted = False
        self._version_sampled: int | None = None

    def close(self) -> None:
        """Wait for the commit in flight; every later write raises ``AppClosedError``."""
        with self._cond:
            self._closing = True
            while self._committing:
                self._cond.wait()
            self.driver.closed = True

    def write(
        self,
        fn: Callable[[apsw.Connection], T],
        verify: Callable[[apsw.Connection], bool] | None = None,
        *,
        autocommit: bool = False,
        step_row: tuple[Any, ...] | None = None,
    ) -> T:
        """Run ``fn`` inside a write transaction, committed before this returns.

        ``verify`` re-checks, after a commit that raised, whether ``fn``'s effect is in the
        file; without it such a write is reported as failed (``JournalError``). A write the
        re-check finds in the file returns what ``fn`` returned, or None if the failing
        statement was ``fn``'s own (see ``autocommit``).
        ``autocommit`` promises that ``fn`` changes the file with at most one statement (any
        other only reads): alone in its batch, it then runs in SQLite's autocommit mode, where
        that statement is its own transaction, with the write lock taken before it reads, and
        no ``BEGIN``/``COMMIT`` round trips. ``step_row`` (the parameters of one
        ``sql.INSERT_STEP`` row plus its fence: workflow id and owner) lets a batch write all
        its step rows in one statement; ``fn`` must then be that insert.
        """
        driver = self.driver
        if driver.writer is None:
            raise JournalReadOnlyError(
                f"{driver.path} was opened read-only; open it read-write to change it"
            )
        op: _Write | None = None
        with self._mutex:
            driver.usable()
            if self._committing:  # follow: the committer wakes us when our batch is durable
                op = _Write(fn, verify, autocommit, step_row)
                op.wake = threading.Lock()
                op.wake.acquire()
                self._queue.append(op)
            else:  # lead: commit our own write now, in this thread (the queue is empty)
                self._committing = True
        if op is None and autocommit:
            # The quiet path of a lone statement (a sequential workflow's every step): no
            # queue entry, no batch, just the statement, the checks, and the hand-on.
            try:
                value, error = self._commit_alone(fn, verify)
            finally:
                self._hand_on([])
            if error is not None:
                raise error
            return value  # type: ignore[no-any-return]
        batch: list[_Write] | None = None
        if op is None:
            op = _Write(fn, verify, autocommit, step_row)
            batch = [op]
        else:
            assert op.wake is not None
            op.wake.acquire()
            if not op.done:  # handed the lead: commit the whole queue, which starts with us
                with self._mutex:
                    batch, self._queue = self._queue, []
                    try:
                        driver.usable()
                    except BaseException as exc:
                        for queued in batch:
                            queued.error, queued.done = exc, True
        if batch is not None:
            self._lead(batch)
        if op.error is not None:
            raise op.error
        return op.value  # type: ignore[no-any-return]

    def _lead(self, batch: list[_Write]) -> None:
        """Commit ``batch``, then wake exactly its writers, handing the lead to the next one."""
        try:
            if not batch[0].done:
                self._commit(batch)
        finally:
            self._hand_on(batch[1:])

    def _hand_on(self, followers: list[_Write]) -> None:
        """End the commit: wake ``followers`` (the writers it made durable), and hand the lead
        to the queue's head if writers queued meanwhile, else leave the journal idle.

        Writers that queued during the commit are left for the queue head, so a commit wakes
        the writers it made durable plus one, never every waiting thread.
        """
        with self._mutex:
            successor = self._queue[0] if self._queue else None
            if successor is None:
                self._committing = False
            if self._version_wanted or (successor is None and self._closing):
                self._cond.notify_all()  # changed_elsewhere() and close() wait on these
        for queued in followers:
            assert queued.wake is not None
            queued.wake.release()
        if successor is not None:
            assert successor.wake is not None
            successor.wake.release()

    def _commit_alone(
        self, fn: Callable[[apsw.Connection], Any],
        verify: Callable[[apsw.Connection], bool] | None,
    ) -> tuple[Any, BaseException | None]:
        """Commit one ``autocommit`` write on its own: (its value, or the error it gets).

        The statement is its own transaction, in SQLite's autocommit mode. A refusal
        (``DurableError``) changed nothing; a statement that raised is "outcome unknown" and
        re-read (``verify``); either way the path is checked before the write is acknowledged.
        """
        if self.gone is not None:  # refused before it reaches the WAL of a file no one sees
            return None, JournalReadOnlyError(self.gone)
        driver = self.driver
        conn = driver.writer
        assert conn is not None
        value: Any = None
        error: BaseException | None = None
        known = False  # the statement's outcome is known: written, or refused
        try:
            driver.faults.check_alive()
            try:
                value = fn(conn)
            except DurableError as exc:  # refused: the statement changed nothing
                error = exc
            known = True
            self._sample_version(conn)
        except apsw.Error as exc:
            rollback(conn)
            if not known:
                op = _Write(fn, verify, True, None)
                self._settle_unknown([op], translate(exc, driver.path))
                value, error = op.value, op.error
        except BaseException:  # a simulated crash, KeyboardInterrupt: nothing settles
            rollback(conn)
            raise
        gone = self._moved()
        if gone is not None and error is None:  # committed to a file no one sees: refused
            value, error = None, JournalReadOnlyError(gone)
        return value, error

    def _moved(self) -> str | None:
        """Why the journal's path no longer names its file (then every write is refused)."""
        gone = self.driver.moved()
        if gone is not None:
            self.gone = gone
        return gone

    def _commit(self, batch: list[_Write]) -> None:
        """One transaction for the whole batch, with no statement per write beyond its own.

        A write refused with a ``DurableError`` (fenced, not found) fails alone: the
        transaction is rolled back and the others run again without it. Refusals are rare,
        and a savepoint around every write would cost two more statements each (each one a
        release and re-take of the GIL while other threads compete for it).
        """
        driver = self.driver
        conn = driver.writer
        assert conn is not None
        if self.gone is not None:  # refused before it reaches the WAL of a file no one sees
            for op in batch:
                op.error, op.done = JournalReadOnlyError(self.gone), True
            return
        if len(batch) == 1 and batch[0].autocommit:
            op = batch[0]
            try:
                op.value, op.error = self._commit_alone(op.fn, op.verify)
            except BaseException as exc:
                op.error, op.done = exc, True
                raise
            op.done = True
            return
        faults = driver.faults
        todo = batch
        grouped = True
        try:
            while todo:
                conn.execute("BEGIN IMMEDIATE")
                rest = _insert_step_rows(conn, todo) if grouped else todo
                if rest is None:  # a row was fenced or already there: find which, one by one
                    rollback(conn)
                    grouped = False
                    continue
                refused = _apply(conn, rest)
                if refused is None:
                    faults.check_alive()
                    conn.execute("COMMIT")
                    self._sample_version(conn)
                    break
                rollback(conn)
                todo = [op for op in todo if op is not refused]
        except apsw.Error as exc:
            rollback(conn)
            self._settle_unknown(todo, translate(exc, driver.path))
        except BaseException as exc:  # a simulated crash, KeyboardInterrupt: nothing settles
            rollback(conn)
            for op in batch:
                op.error = op.error or exc
                op.done = True
            raise
        gone = self._moved()
        if gone is not None:  # committed to a file deleted or replaced: not acknowledged
            for op in batch:
                if op.error is None:
                    op.value, op.error = None, JournalReadOnlyError(gone)
        for op in batch:
            op.done = True

    def _sample_version(self, conn: apsw.Connection) -> None:
        """Right after our commit, note the version for a waiting ``changed_elsewhere``.

        Unlocked read of ``_version_wanted``: a sample taken needlessly costs a statement, one
        missed makes ``changed_elsewhere`` read the version itself once the commit ends.
        """
        if self._version_wanted:
            version = scalar(conn, sql.DATA_VERSION)
            with self._mutex:
                self._version_sampled = version

    def _settle_unknown(self, batch: list[_Write], error: JournalError) -> None:
        if self.driver.faults.broken("no_reread"):  # a negative control's broken engine
            return
        conn = self.driver.writer
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

    def changed_elsewhere(self, patience: float = 0.05) -> bool:
        """True if another connection committed since the last call (cheap; no file I/O).

        Asks ``PRAGMA data_version`` of the writer connection, which changes for every commit
        but its own: another process, or another App in this one. While a commit is in flight
        the committing thread answers for it right after its commit, so a writer that is never
        idle cannot hide the others' commits. Gives up (False) after ``patience`` seconds.
        """
        driver = self.driver
        give_up = time.monotonic() + patience
        with self._cond:
            if driver.writer is None:
                return False
            self._version_wanted = True
            try:
                while True:
                    if driver.closed or driver.faults.dead:
                        return False
                    if self._version_sampled is not None:
                        version = self._version_sampled
                        break
                    if not self._committing:
                        with translated(driver.path):
                            version = scalar(driver.writer, sql.DATA_VERSION)
                        break
                    if not self._cond.wait(max(0.0, give_up - time.monotonic())):
                        return False
            finally:
                self._version_wanted = False
                self._version_sampled = None
        changed = self._data_version is not None and version != self._data_version
        self._data_version = version
        return changed


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
    for start in range(0, len(rows), sql.ROWS_PER_INSERT):
        chunk = rows[start:start + sql.ROWS_PER_INSERT]
        size = sql.STEP_ROW_BUCKETS[bisect.bisect_left(sql.STEP_ROW_BUCKETS, len(chunk))]
        params = [value for op in chunk for value in op.step_row]  # type: ignore[union-attr]
        params += [None] * (sql.STEP_ROW_WIDTH * (size - len(chunk)))  # padding: never written
        conn.execute(sql.insert_steps_sql(size), params)
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
