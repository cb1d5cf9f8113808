"""Group commit of step rows on PostgreSQL: many threads' steps, one statement, one WAL flush.

A step write that finds no other in flight is sent at once, alone, in its own thread
(``sql.RECORD_STEP``: one round trip), so a sequential workflow pays nothing for batching.
Step writes arriving while one is in flight queue; when it ends, the queue's head writes the
whole queue in one statement (``sql.RECORD_STEPS``: one array per column, every row fenced on
its owner) and wakes the writers it made durable, handing the lead to
the next queue head (leader/follower, as the SQLite journal's ``_sqlite/commit.py`` and as
databases flush their logs). The workflows of a busy App and the branches of a ``go`` fan-out
then cost one round trip and one WAL flush per batch instead of one per step, and hold one
pooled connection instead of one each.

A row the statement did not write (fenced, or a finished row already holds its step) is
reported so to its writer alone, who finds out why. A statement whose connection was lost is
"outcome unknown": each of its rows is re-read by its checksum, never assumed written or lost.
"""

from __future__ import annotations

import threading
from typing import Any

from .._errors import JournalError
from .._storage import StepRow
from . import sql
from .driver import Connection, Driver, OutcomeUnknown

__all__ = ["StepCommit", "step_values"]

class _Step:
    """One queued step write and, once ``done``, what became of it."""

    __slots__ = ("done", "error", "owner", "row", "total", "wake", "written")

    def __init__(self, row: StepRow, owner: str, total: int) -> None:
        self.row = row
        self.owner = owner
        self.total = total
        self.done = False
        self.written = False
        self.error: BaseException | None = None
        self.wake: threading.Lock | None = None  # held while the writer waits its turn

    @property
    def key(self) -> tuple[str, int]:
        return self.row.workflow_id, self.row.step

    def values(self) -> tuple[Any, ...]:
        return step_values(self.row, self.owner, self.total)

    def found(self, conn: Connection) -> bool:
        """Whether this very row is in the table (its checksum is), after an unknown outcome."""
        got = conn.execute(sql.STEP_CHECKSUM, self.key).fetchall()
        return bool(got) and int(got[0][0]) == self.total


class StepCommit:
    """The step-row write path of one PostgreSQL journal."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self._mutex = threading.Lock()  # guards the queue and ``_busy``
        self._queue: list[_Step] = []
        self._busy = False  # a step write is in flight

    def record(self, row: StepRow, owner: str, total: int) -> bool:
        """Write ``row`` fenced on ``owner``; True once it is durable, False if it was not
        written (fenced, or a finished row holds the step: the caller finds out which)."""
        op = _Step(row, owner, total)
        with self._mutex:
            lead = not self._busy
            if lead:
                self._busy = True
            else:  # follow: the leader wakes us when our row is durable, or hands us the lead
                op.wake = threading.Lock()
                op.wake.acquire()
                self._queue.append(op)
        if lead:
            batch = [op]
        else:
            assert op.wake is not None
            op.wake.acquire()
            if op.done:
                return _outcome(op)
            with self._mutex:  # handed the lead: write the whole queue, which starts with us
                batch, self._queue = self._queue, []
        try:
            self._write(batch)
        finally:
            self._hand_on(batch[1:])
        return _outcome(op)

    def _hand_on(self, followers: list[_Step]) -> None:
        """Wake ``followers`` (the writers whose rows are settled), and hand the lead to the
        queue's head if writers queued meanwhile, else leave the path idle."""
        with self._mutex:
            successor = self._queue[0] if self._queue else None
            if successor is None:
                self._busy = False
        for op in followers:
            assert op.wake is not None
            op.wake.release()
        if successor is not None:
            assert successor.wake is not None
            successor.wake.release()

    def _write(self, batch: list[_Step]) -> None:
        """Settle every write of ``batch`` (``done``, with ``written`` or ``error``)."""
        try:
            if len(batch) == 1:
                self._alone(batch[0])
                return
            todo = batch
            while todo:  # a step twice in one statement is an error: the repeat goes next
                now, todo = _first_of_each(todo)
                self._together(now)
        except BaseException as exc:  # a simulated crash, a closed journal: all settle failed
            for op in batch:
                if not op.done:
                    op.error, op.done = exc, True

    def _alone(self, op: _Step) -> None:
        try:
            rows = self.driver.autocommit(sql.RECORD_STEP, op.values(), own=True)
            op.written = int(rows[0][0]) == 1
        except OutcomeUnknown as unknown:
            op.written = self.driver.reread(unknown.error, op.found, True)
        op.done = True

    def _together(self, ops: list[_Step]) -> None:
        columns = [list(column) for column in zip(*(op.values() for op in ops), strict=True)]
        try:
            written = {(str(wid), int(step)) for wid, step in
                       self.driver.autocommit(sql.RECORD_STEPS, columns, own=True)}
        except OutcomeUnknown as unknown:  # each row re-read: written, or the error
            for op in ops:
                try:
                    op.written = self.driver.reread(unknown.error, op.found, True)
                except JournalError as exc:
                    op.error = exc
                op.done = True
            return
        for op in ops:
            op.written, op.done = op.key in written, True


def _first_of_each(ops: list[_Step]) -> tuple[list[_Step], list[_Step]]:
    """``ops`` split into the first write of each step and the repeats."""
    keys: set[tuple[str, int]] = set()
    first, repeats = [], []
    for op in ops:
        if op.key in keys:
            repeats.append(op)
        else:
            keys.add(op.key)
            first.append(op)
    return first, repeats


def step_values(row: StepRow, owner: str, total: int) -> tuple[Any, ...]:
    """A step row's values in the order of ``sql.INSERT_STEP``'s and ``sql.RECORD_STEP``'s
    parameters and of ``sql.RECORD_STEPS``' arrays."""
    return (row.workflow_id, owner, row.step, row.kind, row.name, row.output, row.error,
            row.extra, total, row.started_at, row.finished_at, row.site, row.attempts)


def _outcome(op: _Step) -> bool:
    if op.error is not None:
        raise op.error
    return op.written
