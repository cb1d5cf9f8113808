"""``SqliteStorage``: the storage operations on one SQLite journal file.

Each operation binds its parameters to statements of ``sql.py`` and runs them through the
group commit (writes) or a reader connection (reads). Fencing is part of each write: nothing
is written for a former owner, and only a write that changed nothing finds out why, so the
common path costs no extra statement.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import apsw

from .._errors import (
    JournalCorruptError,
    OwnershipLostError,
    WorkflowConflictError,
    WorkflowNotFoundError,
)
from .._faults import Faults
from .._storage import (
    RECENT_STARTS,
    Deduplicated,
    Dequeued,
    Durability,
    MessageRow,
    OwnerRow,
    Owners,
    ParentNotPending,
    PromiseRow,
    QueueEntry,
    QueueSpec,
    QueueStats,
    ScheduleRow,
    StepRow,
    WorkflowRow,
    checksum,
    message_checksum,
    promise_checksum,
    step_checksum,
    workflow_checksum,
)
from . import sql, transfer
from .commit import GroupCommit
from .driver import Driver

__all__ = ["SqliteStorage"]

T = TypeVar("T")


class SqliteStorage:
    """A litedurable journal in one SQLite file (WAL mode). See ``litedurable._storage``.

    Args:
        path: the database file (created with mode 0600 if missing).
        durability: ``"full"`` (``synchronous=FULL``: survives power loss) or ``"normal"``
            (survives process crashes; a power cut may roll back the last commits).
        busy_timeout: seconds to wait for another process's write lock.
        vfs: an apsw VFS name to open the file through (fault injection, power-loss tests).
        readonly: open read-only; every write raises ``JournalReadOnlyError``.
        faults: the App's fault seam (default: none).

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
        faults: Faults | None = None,
    ) -> None:
        self.path = path
        self.faults = faults or Faults()
        self.driver = Driver(path, durability=durability, busy_timeout=busy_timeout, vfs=vfs,
                             readonly=readonly, faults=self.faults)
        self.commit = GroupCommit(self.driver)
        self._held_decisions: dict[str, tuple[Any, ...]] = {}  # decision_after_branch only

    def read(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run ``fn`` on a reader connection (SQLite-level access: tests and tools only)."""
        return self.driver.read(fn)

    def write(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run ``fn`` in a write transaction (SQLite-level access: tests and tools only)."""
        return self.commit.write(fn)

    @property
    def gone(self) -> str | None:
        """Why this journal refuses every write (its file was deleted or replaced), or None."""
        return self.commit.gone

    def close(self) -> None:
        """Close every connection; every later call raises ``AppClosedError``."""
        self.commit.close()
        self.driver.close(gone=self.commit.gone is not None)

    def __enter__(self) -> SqliteStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def changed_elsewhere(self) -> bool:
        return self.commit.changed_elsewhere()

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
        owner: str | None,
        deadline: float | None = None,
        detached: bool = False,
        queue: QueueEntry | None = None,
    ) -> tuple[bool, WorkflowRow]:
        """Create a pending workflow owned by ``owner`` (None: by no process yet, so the next
        recovery of any App takes it; the CLI's ``start``), or an enqueued one owned by no one,
        with ``queue``, unless the id exists.

        Returns (created, row): ``created`` is False when the id was already taken, and
        ``row`` is then the existing workflow (whatever its name). Raises
        ``ParentNotPending``, writing nothing, if the parent is no longer pending, and
        ``Deduplicated`` if the queue's dedup key is held.
        """
        total = workflow_checksum(workflow_id, name, inputs, None, None)

        def insert(conn: apsw.Connection) -> tuple[bool, WorkflowRow]:
            if parent_id is not None:
                parent = _fetch_workflow(conn, parent_id)
                if parent is not None and parent.status != "pending":
                    raise ParentNotPending(parent)
            if queue is None:
                conn.execute(sql.INSERT_WORKFLOW, (
                    workflow_id, name, inputs, total, now, now, app_version, parent_id, owner,
                    deadline, int(detached),
                ))
            else:
                conn.execute(sql.INSERT_ENQUEUED, (
                    workflow_id, name, inputs, total, now, now, app_version, parent_id,
                    deadline, int(detached), *queue,
                ))
            if conn.changes() == 1:  # created: the row is what we wrote, no need to read it
                return True, WorkflowRow(
                    workflow_id, name, "pending" if queue is None else "enqueued", inputs,
                    None, None, now, now, app_version, parent_id,
                    owner if queue is None else None, 0, deadline, detached,
                )
            row = _fetch_workflow(conn, workflow_id)
            if row is None:  # ignored, and not for the id: the dedup key is held
                assert queue is not None
                holder = conn.execute(sql.DEDUP_HOLDER, (queue.queue, queue.dedup_key))
                raise Deduplicated(str(holder.fetchall()[0][0]))
            return False, row

        def verify(conn: apsw.Connection) -> bool:
            return _fetch_workflow(conn, workflow_id) is not None

        # Not ``autocommit``: after a commit that raised, the re-read can tell that the row
        # is there but not whether this call created it, which the caller needs.
        return self.commit.write(insert, verify)

    def get_workflow(self, workflow_id: str) -> WorkflowRow | None:
        """The workflow's row, checksum verified, or None."""
        return self.driver.read(lambda conn: _fetch_workflow(conn, workflow_id))

    def load_steps(self, workflow_id: str) -> list[StepRow]:
        """Every step row of the workflow, in step order, checksums verified (one query)."""
        return self.driver.read(lambda conn: self._fetch_steps(conn, workflow_id))

    def _fetch_steps(self, conn: apsw.Connection, workflow_id: str) -> list[StepRow]:
        statement = (sql.SELECT_STEPS if self.driver.schema >= sql.SITE_SCHEMA
                     else sql.SELECT_OLD_STEPS)
        return _fetch_steps(conn, statement, workflow_id, self.path)

    def load_workflow(self, workflow_id: str) -> tuple[WorkflowRow | None, list[StepRow]]:
        """The workflow's row and every step row, as ``get_workflow`` and ``load_steps`` give.

        One read (one reader taken, one round of locking) for what a run needs to resume: a
        recovery drives a thousand of these at once. The row is read first, as separately:
        steps only ever grow, so steps read after it are never older than it.
        """

        def load(conn: apsw.Connection) -> tuple[WorkflowRow | None, list[StepRow]]:
            row = _fetch_workflow(conn, workflow_id)
            return row, [] if row is None else self._fetch_steps(conn, workflow_id)

        return self.driver.read(load)

    def record_step(self, row: StepRow, owner: str) -> None:
        """Insert a finished step row, or complete an open one (a select awaiting decision).

        Refused with ``OwnershipLostError`` when ``owner`` no longer owns the workflow.
        """
        total = step_checksum(row)
        fenced_row = (row.workflow_id, row.step, row.kind, row.name, row.output, row.error,
                      row.extra, total, row.started_at, row.finished_at, row.workflow_id, owner,
                      row.site, row.attempts)
        if self.faults.defects and self._defective_record_step(row, fenced_row):
            return

        def insert(conn: apsw.Connection) -> None:
            # The fence is part of the INSERT: nothing is written unless ``owner`` still owns
            # the workflow, and only a write that changed nothing needs to find out why.
            conn.execute(sql.INSERT_STEP, fenced_row)
            if conn.changes() == 0:
                _fenced(conn, row.workflow_id, owner)  # raises the error that says which
                _refuse_stale_step(conn, row, total, owner)

        def verify(conn: apsw.Connection) -> bool:
            found = conn.execute(sql.STEP_CHECKSUM, (row.workflow_id, row.step)).fetchall()
            return bool(found) and found[0][0] == total

        self.commit.write(insert, verify, autocommit=True, step_row=fenced_row)

    def _defective_record_step(self, row: StepRow, fenced_row: tuple[Any, ...]) -> bool:
        """``record_step`` as the injected defects break it (negative controls only).

        Returns True when the row was dealt with here (written, held back or dropped), False
        when the defects leave it to the fenced write.
        """
        faults = self.faults
        if faults.broken("lost_step_rows") and row.kind == "step":
            return True  # acknowledged, never written
        if faults.broken("decision_after_branch"):
            held = self._held_decisions.get(row.workflow_id)
            if held is not None and row.step > held[1]:  # a row of code after the select
                self._held_decisions.pop(row.workflow_id, None)
                self.commit.write(lambda conn: conn.execute(sql.INSERT_STEP, held))
            if row.kind in ("select", "as_completed") and row.finished_at is not None:
                self._held_decisions[row.workflow_id] = fenced_row
                return True
        if faults.broken("no_fence"):
            self.commit.write(lambda conn: conn.execute(sql.UNFENCED_STEP, fenced_row[:10]))
            return True
        return False

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
                total = workflow_checksum(workflow_id, known.name, known.inputs, output, error)
                conn.execute(sql.FINISH_KNOWN_WORKFLOW,
                             (status, output, error, total, now, workflow_id, owner, owner))
                if conn.changes() == 1:
                    return True
                _fenced(conn, workflow_id, owner)  # raises the error that says why, if fenced
                return False  # no longer pending
            row = _fenced(conn, workflow_id, owner)
            if row.status != "pending":
                return False
            total = workflow_checksum(workflow_id, row.name, row.inputs, output, error)
            conn.execute(sql.FINISH_WORKFLOW, (status, output, error, total, now, workflow_id))
            return True

        def verify(conn: apsw.Connection) -> bool:
            row = _fetch_workflow(conn, workflow_id)
            return row is not None and row.status == status

        # None: an autocommit statement raised and the re-read found the outcome written.
        return self.commit.write(finish, verify, autocommit=known is not None) is not False

    def resume(self, workflow_id: str, now: float, *, owner: str | None,
               app_version: str | None = None) -> list[str]:
        """Make a finished workflow pending again, with the descendants its cancel reached.

        The workflow (any status but pending or succeeded) and its non-detached descendants
        that were cancelled together with it (same recorded cancellation) become pending under
        ``owner`` with no deadline and a fresh recovery count; a child cancelled on its own
        stays cancelled. ``app_version``, if given, is recorded on each of them (and on the
        workflow alone if it is pending: that moves it without disturbing its owner).
        A queued workflow goes back to its queue (``enqueued``, owned by no one) instead.
        Returns the ids made pending (empty when there was nothing to resume).
        """

        def update(conn: apsw.Connection) -> list[str]:
            row = _fetch_workflow(conn, workflow_id)
            if row is None:
                raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r} in {self.path}")
            if row.status in ("pending", "enqueued") and app_version is not None:
                conn.execute(sql.SET_APP_VERSION, (app_version, now, workflow_id))
            if row.status in ("pending", "enqueued", "succeeded"):
                return []
            ids = [workflow_id] + [
                r[0] for r in conn.execute(sql.CANCELLED_WITH,
                                           (workflow_id, workflow_id, row.error))
            ]
            pending = []
            for wid in ids:
                for (status,) in conn.execute(sql.REOPEN_WORKFLOW, (now, owner, app_version,
                                                                    wid)):
                    if status == "pending":
                        pending.append(wid)
            return pending

        return self.commit.write(update)

    def cancel_tree(self, workflow_id: str, error: bytes, now: float) -> list[str]:
        """Cancel a workflow and its non-detached descendants that are pending or enqueued
        (any process may; an enqueued one never starts).

        Their owner stays, so steps already running can still record what they did (a resume
        then does not redo it); the owner's runtime notices the status and stops the run, and
        its final outcome is refused (``finish_workflow`` writes only pending workflows).
        Returns the ids that were pending and are now cancelled.
        """

        def update(conn: apsw.Connection) -> list[str]:
            ids = [workflow_id] + [
                r[0] for r in conn.execute(sql.SELECT_DESCENDANTS, (workflow_id, workflow_id))
            ]
            done = []
            for wid in ids:
                row = _fetch_workflow(conn, wid)
                if row is None or row.status not in ("pending", "enqueued"):
                    continue
                total = workflow_checksum(wid, row.name, row.inputs, None, error)
                conn.execute(sql.CANCEL_WORKFLOW, (error, total, now, wid))
                done.append(wid)
            return done

        return self.commit.write(update)

    def fork(self, source: WorkflowRow, target_id: str, below: int, *, now: float,
             app_version: str, owner: str | None) -> int:
        """Create ``target_id`` with ``source``'s name and inputs and its steps below ``below``.

        One transaction, so a crash leaves either no fork or a complete one. Returns the number
        of step rows copied.
        """
        source_id = source.workflow_id
        total = workflow_checksum(target_id, source.name, source.inputs, None, None)
        below = min(below, 2**63 - 1)  # past SQLite's integers means every step, as it says

        def copy(conn: apsw.Connection) -> int:
            # Checked inside the write transaction, so no start can take the id in between.
            taken: list[Any] = conn.execute(sql.NAME_AND_STATUS, (target_id,)).fetchall()
            if taken:
                raise WorkflowConflictError(
                    f"cannot fork {source_id!r} into {target_id!r}: that id is already taken by "
                    f"a {taken[0][0]!r} workflow ({taken[0][1]}), which was left as it is. Pass "
                    "another new id, or none for a random one."
                )
            conn.execute(sql.INSERT_FORK, (target_id, source.name, source.inputs, total, now,
                                           now, app_version, source.parent_id, owner))
            rows: list[Any] = conn.execute(sql.SELECT_STEPS_BELOW, (source_id, below)).fetchall()
            rows.sort(key=lambda r: r[1])
            for r in rows:
                row = StepRow(target_id, r[1], r[2], r[3], r[4], r[5], r[6], r[8], r[9])
                conn.execute(sql.COPY_STEP, (target_id, r[1], r[2], r[3], r[4], r[5], r[6],
                                             step_checksum(row), r[8], r[9], *r[10:13]))
            _fork_events_and_streams(conn, source_id, target_id, rows, now)
            return len(rows)

        return self.commit.write(copy)

    def delete_finished(self, before: float) -> int:
        """Delete terminal workflows last updated before ``before`` and their steps (gc),
        but not a child whose parent is unfinished: the parent may still wait for it."""

        def delete(conn: apsw.Connection) -> int:
            ids = [r[0] for r in conn.execute(sql.FINISHED_BEFORE, (before,))]
            for wid in ids:
                conn.execute(sql.DELETE_STEPS, (wid,))
                for statement in (sql.DELETE_MESSAGES, sql.DELETE_EVENTS, sql.DELETE_STREAMS,
                                  sql.DELETE_PROMISES):
                    conn.execute(statement, (wid,))
                conn.execute(sql.DELETE_WORKFLOW, (wid,))
            return len(ids)

        return self.commit.write(delete)

    def list_workflows(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        app_version: str | None = None,
        queue: str | None = None,
        parent: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[WorkflowRow]:
        """Workflows matching every given filter (``since``/``until``: created at or after,
        before), newest first."""
        if queue is not None and self.driver.schema < sql.QUEUE_SCHEMA:
            return []  # an older file read as it is: it has no queues
        where, params = _filters(status=status, name=name, app_version=app_version,
                                 queue=queue, parent=parent, since=since, until=until)
        statement = sql.LIST_WORKFLOWS + where + sql.LIST_ORDER
        bound: list[Any] = [*params, -1 if limit is None else limit, offset]
        return self.driver.read(
            lambda conn: [_workflow_row(r) for r in conn.execute(statement, bound)]
        )

    def count_workflows(
        self, *, status: str | None = None, name: str | None = None,
        app_version: str | None = None, queue: str | None = None, parent: str | None = None,
        since: float | None = None, until: float | None = None,
    ) -> dict[str, int]:
        """How many workflows match the filters of ``list_workflows``, by status."""
        if queue is not None and self.driver.schema < sql.QUEUE_SCHEMA:
            return {}
        where, params = _filters(status=status, name=name, app_version=app_version,
                                 queue=queue, parent=parent, since=since, until=until)
        statement = sql.COUNT_WORKFLOWS.format(where=where)
        return self.driver.read(
            lambda conn: {str(status): int(n) for status, n in conn.execute(statement, params)})

    def pending_by_version(self) -> dict[str, int]:
        """How many pending workflows each app version has."""
        return self.driver.read(
            lambda conn: {v: n for v, n in conn.execute(sql.PENDING_BY_VERSION)}
        )

    def pending(self, app_version: str | None) -> list[tuple[str, str, str | None]]:
        """(workflow_id, name, owner) of each pending workflow of ``app_version`` (of every
        version when None), oldest first."""
        return self.driver.read(
            lambda conn: [(wid, name, owner)
                          for wid, name, owner in conn.execute(sql.PENDING, (app_version,))]
        )

    def statuses(self, workflow_ids: Iterable[str]) -> dict[str, str]:
        """The status of each of ``workflow_ids`` that exists."""
        ids = list(workflow_ids)

        def load(conn: apsw.Connection) -> dict[str, str]:
            found: dict[str, str] = {}
            for start in range(0, len(ids), sql.STATUS_CHUNK):
                chunk = ids[start:start + sql.STATUS_CHUNK]
                statement = sql.STATUSES.format(marks=", ".join("?" * len(chunk)))
                for wid, status in conn.execute(statement, chunk):
                    found[wid] = status
            return found

        return self.driver.read(load) if ids else {}

    # -- messages, events, streams, promises ----------------------------------------------

    def _mailbox_tables(self) -> bool:
        """Whether the file has the tables schema 5 added (a read-only older file has not)."""
        return self.driver.schema >= sql.MAILBOX_SCHEMA

    def send_message(self, *, destination: str, topic: str, payload: bytes, now: float,
                     key: str | None, sender: str | None = None, step: StepRow | None = None,
                     owner: str | None = None) -> bool | None:
        """See ``Storage.send_message``."""
        total = message_checksum(destination, topic, payload)

        def send(conn: apsw.Connection) -> bool | None:
            if not conn.execute(sql.WORKFLOW_EXISTS, (destination,)).fetchall():
                return None
            conn.execute(sql.INSERT_MESSAGE, (destination, topic, payload, total, sender, key,
                                              now))
            sent = conn.changes() == 1
            if step is not None:
                assert owner is not None
                _write_step(conn, step, owner)
            return sent

        return self.commit.write(send)

    def take_message(self, workflow_id: str, topic: str, step: StepRow, owner: str, *,
                     open_row: bool) -> bytes | None:
        """See ``Storage.take_message``."""

        def take(conn: apsw.Connection) -> bytes | None:
            found = conn.execute(sql.OLDEST_UNREAD, (workflow_id, topic)).fetchall()
            if not found:
                if open_row:
                    _write_step(conn, step, owner)
                return None
            message = _message_row(found[0], self.path)
            conn.execute(sql.CONSUME_MESSAGE, (step.step, step.started_at, message.seq))
            _write_step(conn, step._replace(output=message.payload,
                                            finished_at=step.started_at), owner)
            return message.payload

        return self.commit.write(take)

    def unread_topics(self, workflow_id: str) -> set[str]:
        """See ``Storage.unread_topics``."""
        if not self._mailbox_tables():
            return set()
        return self.driver.read(
            lambda conn: {r[0] for r in conn.execute(sql.UNREAD_TOPICS, (workflow_id,))}
        )

    def mailbox(self, workflow_id: str) -> list[MessageRow]:
        """See ``Storage.mailbox``."""
        if not self._mailbox_tables():
            return []
        return self.driver.read(
            lambda conn: [_message_row(r, self.path)
                          for r in conn.execute(sql.MAILBOX, (workflow_id,))]
        )

    def set_event(self, workflow_id: str, key: str, value: bytes, now: float, step: StepRow,
                  owner: str) -> None:
        """See ``Storage.set_event``."""
        total = checksum(workflow_id, key, value)

        def put(conn: apsw.Connection) -> None:
            conn.execute(sql.UPSERT_EVENT, (workflow_id, key, value, total, now))
            _write_step(conn, step, owner)

        self.commit.write(put)

    def get_event(self, workflow_id: str, key: str) -> bytes | None:
        """See ``Storage.get_event``."""
        if not self._mailbox_tables():
            return None

        def get(conn: apsw.Connection) -> bytes | None:
            found: list[Any] = conn.execute(sql.SELECT_EVENT, (workflow_id, key)).fetchall()
            if not found:
                return None
            value, total = found[0]
            self._check(checksum(workflow_id, key, value), total,
                        f"event {key!r} of workflow {workflow_id!r}")
            return bytes(value)

        return self.driver.read(get)

    def events(self, workflow_id: str) -> dict[str, bytes]:
        """See ``Storage.events``."""
        if not self._mailbox_tables():
            return {}

        def get(conn: apsw.Connection) -> dict[str, bytes]:
            found = {}
            for key, value, total in conn.execute(sql.SELECT_EVENTS, (workflow_id,)):
                self._check(checksum(workflow_id, key, value), total,
                            f"event {key!r} of workflow {workflow_id!r}")
                found[key] = bytes(value)
            return found

        return self.driver.read(get)

    def write_stream(self, workflow_id: str, key: str, value: bytes | None, now: float,
                     step: StepRow, owner: str) -> int | None:
        """See ``Storage.write_stream``."""

        def append(conn: apsw.Connection) -> int | None:
            end: list[Any] = conn.execute(sql.STREAM_END, (workflow_id, key)).fetchall()
            position, closed = end[0]
            if closed:
                return None
            total = checksum(workflow_id, key, str(position), value)
            conn.execute(sql.INSERT_STREAM_ITEM, (workflow_id, key, position, value, total, now))
            _write_step(conn, step._replace(output=str(position).encode()), owner)
            return int(position)

        return self.commit.write(append)

    def read_stream(self, workflow_id: str, key: str, position: int,
                    limit: int) -> tuple[list[tuple[int, bytes]], bool]:
        """See ``Storage.read_stream``."""
        if not self._mailbox_tables():
            return [], False

        def read(conn: apsw.Connection) -> tuple[list[tuple[int, bytes]], bool]:
            items: list[tuple[int, bytes]] = []
            closed = False
            for at, value, total in conn.execute(sql.READ_STREAM,
                                                 (workflow_id, key, position, limit)):
                self._check(checksum(workflow_id, key, str(at), value), total,
                            f"item {at} of stream {key!r} of workflow {workflow_id!r}")
                if value is None:
                    closed = True
                    break
                items.append((at, bytes(value)))
            if not items and not closed:  # ``position`` past the close marker: still closed
                closed = bool(conn.execute(sql.STREAM_END, (workflow_id, key)).fetchall()[0][1])
            return items, closed

        return self.driver.read(read)

    def streams(self, workflow_id: str) -> dict[str, tuple[int, bool]]:
        """See ``Storage.streams``."""
        if not self._mailbox_tables():
            return {}
        return self.driver.read(
            lambda conn: {key: (int(count), bool(closed)) for key, count, closed
                          in conn.execute(sql.SELECT_STREAMS, (workflow_id,))}
        )

    def create_promise(self, promise_id: str, workflow_id: str, now: float, step: StepRow,
                       owner: str) -> None:
        """See ``Storage.create_promise``."""
        total = promise_checksum(promise_id, workflow_id, None, None)

        def create(conn: apsw.Connection) -> None:
            conn.execute(sql.INSERT_PROMISE, (promise_id, workflow_id, step.step, total, now))
            _write_step(conn, step, owner)

        self.commit.write(create)

    def settle_promise(self, promise_id: str, *, output: bytes | None, error: bytes | None,
                       now: float) -> tuple[PromiseRow, bool] | None:
        """See ``Storage.settle_promise``."""

        def settle(conn: apsw.Connection) -> tuple[PromiseRow, bool] | None:
            found = conn.execute(sql.SELECT_PROMISE, (promise_id,)).fetchall()
            if not found:
                return None
            row = self._promise_row(found[0])
            if row.settled_at is not None:
                return row, False
            total = promise_checksum(promise_id, row.workflow_id, output, error)
            conn.execute(sql.SETTLE_PROMISE, (output, error, total, now, promise_id))
            return row._replace(output=output, error=error, settled_at=now), True

        def verify(conn: apsw.Connection) -> bool:
            found = conn.execute(sql.SELECT_PROMISE, (promise_id,)).fetchall()
            return bool(found) and found[0][7] == now and found[0][3] == output

        return self.commit.write(settle, verify)

    def get_promise(self, promise_id: str) -> PromiseRow | None:
        """See ``Storage.get_promise``."""
        if not self._mailbox_tables():
            return None

        def get(conn: apsw.Connection) -> PromiseRow | None:
            found = conn.execute(sql.SELECT_PROMISE, (promise_id,)).fetchall()
            return self._promise_row(found[0]) if found else None

        return self.driver.read(get)

    def promises(self, workflow_id: str) -> list[PromiseRow]:
        """See ``Storage.promises``."""
        if not self._mailbox_tables():
            return []
        return self.driver.read(
            lambda conn: [self._promise_row(r)
                          for r in conn.execute(sql.SELECT_PROMISES, (workflow_id,))]
        )

    def _promise_row(self, r: Sequence[Any]) -> PromiseRow:
        promise_id, workflow_id, step, output, error, total, created, settled = r
        self._check(promise_checksum(promise_id, workflow_id, output, error), total,
                    f"promise {promise_id!r} of workflow {workflow_id!r}")
        return PromiseRow(promise_id, workflow_id, step, output, error, created, settled)

    def _check(self, computed: int, stored: int, what: str) -> None:
        if computed != stored:
            raise JournalCorruptError(
                f"{what} in {self.path} fails its checksum: the file was modified outside "
                "SQLite or the disk is failing. Restore a backup of the journal."
            )

    # -- queues ---------------------------------------------------------------------------

    def dequeue(self, spec: QueueSpec, owner: str, *, clock: Callable[[], float], limit: int,
                names: Sequence[str], app_version: str | None) -> Dequeued:
        """See ``Storage.dequeue``.

        Writers are serialized on one file, so counting what runs, checking the limits and
        claiming is exact in one write transaction: no lock beyond SQLite's own. A read
        first sees whether anything waits at all, so the commit watcher's many looks
        cost no write transaction each.
        """
        params = {"queue": spec.name, "names": json.dumps(list(names)),
                  "version": app_version}
        if limit <= 0 or not self.driver.read(
                lambda conn: conn.execute(sql.ANY_ENQUEUED, params).fetchall()):
            return Dequeued([], None)

        def pick(conn: apsw.Connection, now: float) -> Dequeued:
            """The workflows the limits let go now (read only), in queue order."""
            budget, reopens_at = limit, None
            counts: list[Any] = conn.execute(sql.QUEUE_RUNNING, (spec.name, owner)).fetchall()
            running, mine = int(counts[0][0]), int(counts[0][1])
            if spec.concurrency is not None and not spec.partitioned:
                budget = min(budget, spec.concurrency - running)
            if spec.worker_concurrency is not None:
                budget = min(budget, spec.worker_concurrency - mine)
            if spec.rate_limit is not None:
                recent, reopens_at = _rate_window(conn, spec.name, spec.rate_limit, now)
                budget = min(budget, spec.rate_limit[0] - recent)
            if budget <= 0:
                return Dequeued([], reopens_at)
            if not spec.partitioned or spec.concurrency is None:
                return Dequeued([wid for wid, _ in conn.execute(
                    sql.NEXT_ENQUEUED, {**params, "limit": budget})], None)
            most = spec.concurrency
            room = {key: most - int(count) for key, count
                    in conn.execute(sql.QUEUE_RUNNING_BY_PARTITION, (spec.name,))}
            heads: list[tuple[int, int, str]] = []  # (priority, enqueue order, id)
            for (key,) in conn.execute(sql.WAITING_PARTITIONS, (spec.name,)).fetchall():
                free = min(room.get(key, most), budget)
                if free > 0:
                    heads += [(priority, seq, wid) for wid, priority, seq in conn.execute(
                        sql.NEXT_IN_PARTITION, {**params, "key": key, "limit": free})]
            taken = [wid for _, _, wid in sorted(heads)[:budget]]
            return Dequeued(taken, None)

        def claim(conn: apsw.Connection, picked: Dequeued, statement: str,
                  now: float) -> Dequeued:
            if not picked.workflow_ids:
                return picked
            for wid in picked.workflow_ids:
                conn.execute(statement, {"owner": owner, "now": now, "id": wid})
                conn.execute(sql.INSERT_QUEUE_START, (spec.name, now))
            longest = max(RECENT_STARTS, spec.rate_limit[1] if spec.rate_limit else 0)
            conn.execute(sql.PRUNE_QUEUE_STARTS, (spec.name, now - longest))
            if spec.rate_limit is None:
                return picked
            # Full now? Then the next dequeue waits for the window's oldest to leave it.
            _, reopens_at = _rate_window(conn, spec.name, spec.rate_limit, now)
            return Dequeued(picked.workflow_ids, reopens_at)

        def locked(conn: apsw.Connection) -> Dequeued:
            now = clock()  # once the write lock is ours: the instant the limits are judged
            return claim(conn, pick(conn, now), sql.DEQUEUE, now)

        if self.faults.broken("racy_dequeue"):  # the negative control: read, then claim
            now = clock()
            picked = self.driver.read(lambda conn: pick(conn, now))
            return self.commit.write(lambda conn: claim(conn, picked, sql.RACY_DEQUEUE, now))
        return self.commit.write(locked)

    def requeue(self, workflow_ids: Sequence[str], owner: str, now: float) -> list[str]:
        """See ``Storage.requeue``."""
        if not workflow_ids or self.driver.schema < sql.QUEUE_SCHEMA:
            return []
        wanted = json.dumps(list(workflow_ids))
        return self.commit.write(
            lambda conn: [str(r[0]) for r in conn.execute(sql.REQUEUE, (wanted, owner, now))])

    def declare_queue(self, spec: QueueSpec, now: float) -> None:
        """See ``Storage.declare_queue``."""
        most, per = spec.rate_limit if spec.rate_limit is not None else (None, None)
        values = (spec.name, spec.concurrency, spec.worker_concurrency, most, per,
                  int(spec.partitioned), now)
        self.commit.write(lambda conn: conn.execute(sql.UPSERT_QUEUE, values))

    def queue_stats(self, now: float) -> list[QueueStats]:
        """See ``Storage.queue_stats``."""
        if self.driver.schema < sql.QUEUE_SCHEMA:
            return []

        def read(conn: apsw.Connection) -> list[QueueStats]:
            specs = {
                str(r[0]): QueueSpec(str(r[0]), r[1], r[2],
                                     None if r[3] is None else (int(r[3]), float(r[4])),
                                     bool(r[5]))
                for r in conn.execute(sql.SELECT_QUEUES)
            }
            counts = {row[0]: row[1:]
                      for row in conn.execute(sql.QUEUE_COUNTS, (now - RECENT_STARTS,))}
            return [QueueStats(specs.get(name, QueueSpec(name)),
                               *counts.get(name, (0, 0, 0, None)))
                    for name in sorted({*specs, *counts})]

        return self.driver.read(read)

    # -- ownership ------------------------------------------------------------------------

    def heartbeat(self, row: OwnerRow) -> None:
        """Create ``row.owner``'s lease row, or refresh its heartbeat (the rest never changes).

        Stamped with this machine's wall clock, the journal's clock for a file on one machine
        (``row.heartbeat`` is not used: see ``Storage.heartbeat``)."""
        identity = (row.owner, row.host, row.pid, time.time(), row.lease, row.pid_namespace)
        self.commit.write(lambda conn: conn.execute(sql.UPSERT_OWNER, identity))

    def owners(self) -> Owners:
        """Every live-or-dead owner row, by owner token, and the wall clock read before them."""

        def read(conn: apsw.Connection) -> Owners:
            now = time.time()
            return Owners({r[0]: OwnerRow(*r) for r in conn.execute(sql.SELECT_OWNERS)}, now)

        return self.driver.read(read)

    def claim(
        self, claims: Iterable[tuple[str, str | None]], owner: str, *,
        forget: Sequence[tuple[str, float]] = (),
    ) -> dict[str, int]:
        """Take over workflows from presumed-dead owners (compare-and-swap on the owner).

        Each claim counts a recovery attempt, reset to 1 when the workflow recorded new steps
        since its last claim (progress is not a crash loop). Returns the claimed ids with
        their attempt counts, in the order of ``claims``; an id whose owner changed meanwhile
        is left out. The owner rows of ``forget`` (owners found dead, with the heartbeat they
        were judged on) are deleted in the same transaction, unless they beat again since.

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
                for wid, attempts in conn.execute(sql.CLAIM, {"new": owner, "claims": wanted})
            }
            for dead, heartbeat in forget:
                conn.execute(sql.FORGET_OWNER, (dead, heartbeat))
            return {wid: found[wid] for wid, _ in claims if wid in found}

        return self.commit.write(take)

    def release(self, owner: str) -> None:
        """Give up ``owner``'s pending workflows and its owner row (clean shutdown)."""

        def drop(conn: apsw.Connection) -> None:
            conn.execute(sql.DISOWN, (owner,))
            conn.execute(sql.DELETE_OWNER, (owner,))

        self.commit.write(drop)

    # -- schedules ------------------------------------------------------------------------

    def upsert_schedule(self, row: ScheduleRow, now: float) -> None:
        """Create a schedule, or update its definition keeping its pause state and last fire."""
        values = (row.name, row.workflow, row.cron, row.tz, int(row.catch_up), int(row.paused),
                  row.last_fire, now, now)
        self.commit.write(lambda conn: conn.execute(sql.UPSERT_SCHEDULE, values))

    def schedules(self) -> list[ScheduleRow]:
        """Every schedule, by name."""
        return self.driver.read(
            lambda conn: [
                ScheduleRow(name, workflow, cron, tz, bool(catch_up), bool(paused), last_fire,
                            created, updated)
                for name, workflow, cron, tz, catch_up, paused, last_fire, created, updated
                in conn.execute(sql.SELECT_SCHEDULES)
            ]
        )

    def pause_schedule(self, name: str, paused: bool, now: float) -> bool:
        """Pause or unpause a schedule; False if there is none by that name."""

        def update(conn: apsw.Connection) -> bool:
            conn.execute(sql.PAUSE_SCHEDULE, (int(paused), now, name))
            return conn.changes() == 1

        return self.commit.write(update)

    def delete_schedule(self, name: str) -> bool:
        """Remove a schedule (its past firings stay); False if there is none by that name."""

        def delete(conn: apsw.Connection) -> bool:
            conn.execute(sql.DELETE_SCHEDULE, (name,))
            return conn.changes() == 1

        return self.commit.write(delete)

    def schedule_fired(self, name: str, fire: float) -> None:
        """Remember that the firing at ``fire`` was started (the latest fire only grows)."""
        self.commit.write(lambda conn: conn.execute(sql.SCHEDULE_FIRED, (fire, fire, name)))

    # -- health ---------------------------------------------------------------------------

    def quick_check(self) -> str:
        """SQLite's ``PRAGMA quick_check`` result ("ok" when sound), damage as an answer.

        Damage bad enough that SQLite refuses to run the check (the schema page itself) is
        reported as text too, so a caller deciding "may I write?" needs one test.
        """
        def check(conn: apsw.Connection) -> str:
            try:
                return "\n".join(r[0] for r in conn.execute(sql.QUICK_CHECK))
            except (apsw.CorruptError, apsw.NotADBError) as exc:
                return f"{type(exc).__name__}: {exc}"

        return self.driver.read(check)

    def backup(self, destination: str) -> None:
        """See ``Storage.backup``."""
        transfer.backup(self.driver, destination)

    def check(self) -> list[str]:
        """See ``Storage.check``."""
        return transfer.check(self.driver, self.path)

    def export_workflow(self, workflow_id: str) -> dict[str, Any] | None:
        """See ``Storage.export_workflow``."""
        return transfer.export_workflow(self.driver, workflow_id)

    def import_workflows(self, records: list[dict[str, Any]]) -> list[str]:
        """See ``Storage.import_workflows``."""
        return transfer.import_workflows(self.driver, self.commit.write, records)

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` result ("ok" when sound)."""
        return self.driver.read(
            lambda conn: "\n".join(r[0] for r in conn.execute(sql.INTEGRITY_CHECK))
        )


# -- rows ---------------------------------------------------------------------------------


def _filters(*, status: str | None = None, name: str | None = None,
             app_version: str | None = None, queue: str | None = None,
             parent: str | None = None, since: float | None = None,
             until: float | None = None) -> tuple[str, list[Any]]:
    """The WHERE clause (or "") and its parameters for the given workflow filters."""
    where, params = [], []
    for test, value in (("status = ?", status), ("name = ?", name),
                        ("app_version = ?", app_version), ("queue = ?", queue),
                        ("parent_id = ?", parent), ("created_at >= ?", since),
                        ("created_at < ?", until)):
        if value is not None:
            where.append(test)
            params.append(value)
    return (" WHERE " + " AND ".join(where) if where else ""), params


def _fetch_workflow(conn: apsw.Connection, workflow_id: str) -> WorkflowRow | None:
    found = conn.execute(sql.SELECT_WORKFLOW, (workflow_id,)).fetchall()
    return _workflow_row(found[0]) if found else None


def _fetch_steps(conn: apsw.Connection, statement: str, workflow_id: str,
                 path: str) -> list[StepRow]:
    rows = []
    for r in conn.execute(statement, (workflow_id,)):
        row = StepRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[8], r[9], r[10], r[11],
                      r[12])
        if step_checksum(row) != r[7]:
            raise JournalCorruptError(
                f"step {row.step} of workflow {workflow_id!r} in {path} fails its checksum: the "
                "file was modified outside SQLite or the disk is failing. Restore a backup, or "
                "fork the workflow from before that step."
            )
        rows.append(row)
    return rows


def _workflow_row(r: Sequence[Any]) -> WorkflowRow:
    (wid, name, status, inputs, output, error, total, created, updated, version, parent, owner,
     attempts, deadline, detached) = r
    if workflow_checksum(wid, name, inputs, output, error) != total:
        raise JournalCorruptError(
            f"workflow {wid!r} fails its checksum: the file was modified outside SQLite or the "
            "disk is failing. Restore a backup of the journal."
        )
    return WorkflowRow(wid, name, status, inputs, output, error, created, updated, version,
                       parent, owner, attempts, deadline, bool(detached))


def _rate_window(conn: apsw.Connection, queue: str, rate: tuple[int, float],
                 now: float) -> tuple[int, float | None]:
    """Dequeues of ``queue`` in the rolling window ending ``now``, and, when that is the
    limit already, the instant the window's oldest leaves it (the next may go then)."""
    most, per = rate
    found: list[Any] = conn.execute(sql.QUEUE_WINDOW,
                                    {"queue": queue, "now": now, "per": per}).fetchall()
    recent, oldest = int(found[0][0]), found[0][1]
    return recent, float(oldest) + per if recent >= most and oldest is not None else None


def _message_row(r: Sequence[Any], path: str) -> MessageRow:
    seq, destination, topic, payload, total, sender, key, created, step, consumed = r
    if message_checksum(destination, topic, payload) != total:
        raise JournalCorruptError(
            f"message {seq} to workflow {destination!r} in {path} fails its checksum: the file "
            "was modified outside SQLite or the disk is failing. Restore a backup of the journal."
        )
    return MessageRow(seq, destination, topic, payload, sender, key, created, step, consumed)


def _write_step(conn: apsw.Connection, row: StepRow, owner: str) -> None:
    """Write ``row`` in the caller's transaction, fenced on ``owner`` like ``record_step``."""
    total = step_checksum(row)
    conn.execute(sql.INSERT_STEP, (
        row.workflow_id, row.step, row.kind, row.name, row.output, row.error, row.extra, total,
        row.started_at, row.finished_at, row.workflow_id, owner, row.site, row.attempts,
    ))
    if conn.changes() == 0:
        _fenced(conn, row.workflow_id, owner)
        _refuse_stale_step(conn, row, total, owner)


def _fork_events_and_streams(conn: apsw.Connection, source_id: str, target_id: str,
                             rows: Sequence[Sequence[Any]], now: float) -> None:
    """Give a fork the events and streams its copied steps made (rows: in step order).

    An event's value is its ``set_event`` step's output; a stream's items are the source's
    first ones, one per copied ``write_stream`` step, then a close if one was copied.
    """
    writes: dict[str, int] = {}
    closed: set[str] = set()
    for r in rows:
        kind, name, output = r[2], r[3], r[4]
        if kind == "set_event" and output is not None:
            conn.execute(sql.UPSERT_EVENT, (target_id, name, output,
                                            checksum(target_id, name, output), now))
        elif kind == "write_stream" and r[5] is None:
            writes[name] = writes.get(name, 0) + 1
        elif kind == "close_stream" and r[5] is None:
            closed.add(name)
    for key in sorted({*writes, *closed}):
        count = 0
        for at, value, _, created in conn.execute(sql.COPY_STREAM_ITEMS,
                                                  (source_id, key, writes.get(key, 0))):
            conn.execute(sql.INSERT_STREAM_ITEM, (target_id, key, at, value,
                                                  checksum(target_id, key, str(at), value),
                                                  created))
            count = at + 1
        if key in closed:
            conn.execute(sql.INSERT_STREAM_ITEM, (target_id, key, count, None,
                                                  checksum(target_id, key, str(count), None),
                                                  now))


def _fenced(conn: apsw.Connection, workflow_id: str, owner: str | None) -> WorkflowRow:
    """The workflow's row if ``owner`` (None: anyone) may write it, else the refusal."""
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


def _refuse_stale_step(conn: apsw.Connection, row: StepRow, total: int, owner: str) -> None:
    """A finished row already holds this step: refuse the write unless it is the same outcome.

    The second fence: a process that lost a workflow and claimed it back keeps its owner token,
    so its stale run passes the owner check; a step someone else completed meanwhile must not
    be acknowledged to that run as if its own outcome had been written.
    """
    found = conn.execute(sql.STEP_CHECKSUM, (row.workflow_id, row.step)).fetchall()
    if found and found[0][0] != total:
        raise OwnershipLostError(
            f"step {row.step} of workflow {row.workflow_id!r} is already recorded with another "
            f"outcome: this run of it is stale (its owner {owner!r} lost the workflow and took "
            "it back meanwhile). The write was refused; the workflow continues from the journal."
        )
