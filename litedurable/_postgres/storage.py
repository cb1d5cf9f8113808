"""``PostgresStorage``: the storage operations on a PostgreSQL database (psycopg 3).

Status: see the package docstring (``litedurable/_postgres/__init__.py``).

Concurrency (READ COMMITTED, many processes on one database):

* Fencing: a step row is inserted through a CTE that share-locks the workflow row where its
  owner is the writer (``sql.INSERT_STEP``): a claim by another owner (an UPDATE of that row)
  either committed before, and the fence finds the new owner and writes nothing, or waits for
  the step's commit. Outcome writes are UPDATEs with the owner and status in their WHERE,
  which PostgreSQL re-checks on the row a concurrent writer left. Writes that go with a step
  (messages, events, streams, promises) run in the step's transaction: a refused step rolls
  them back.
* A child's insert share-locks its parent row and refuses a parent that is not pending;
  ``cancel_tree`` locks the tree level by level (``FOR UPDATE``) before it reads each level's
  children, so a child inserted concurrently is either seen and cancelled or refused.
* Claims are compare-and-swap UPDATEs (two claimers: one wins). A dequeue takes a
  transaction-level advisory lock per queue (``sql.QUEUE_LOCK``), so counting what runs,
  checking concurrency and rate limits and claiming is exact across peers.
* ``changed_elsewhere`` is the driver's LISTEN flag: every write transaction notifies once
  (PostgreSQL folds a transaction's identical notifications into one), heartbeats excepted;
  the runtime re-reads the tables when told, and the flag is always up while the listener
  is cut off, so a missed notification costs a re-read, never a hang.
* Each operation is one transaction (``record_step``: one autocommit statement that fences,
  inserts and notifies); a deadlock or serialization failure runs it again, and a commit
  whose outcome is unknown is re-read (``driver.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .._errors import (
    JournalCorruptError,
    JournalError,
    OwnershipLostError,
    UsageError,
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
    Storage,
    WorkflowRow,
    checksum,
    message_checksum,
    promise_checksum,
    step_checksum,
    workflow_checksum,
)
from . import sql, transfer
from .commit import StepCommit, step_values
from .driver import RETRIES, Connection, Driver, OutcomeUnknown, Retry

__all__ = ["PostgresStorage"]


class PostgresStorage:
    """A litedurable journal in a schema of a PostgreSQL database. See ``litedurable._storage``.

    Args:
        dsn: a libpq connection string or ``postgresql://`` URL.
        schema: the schema the tables live in (created and migrated on open).
        durability: ``"full"`` (``synchronous_commit=on``) or ``"normal"`` (``off``).
        timeout: seconds to wait for a pooled connection.
        faults: the App's fault seam (a simulated crash refuses every write; the SQLite
            backend's injected defects do not apply here).
        readonly: do not create or migrate the schema (it must be at this version), and
            refuse every write with ``JournalReadOnlyError``.
    """

    def __init__(self, dsn: str, *, schema: str = "litedurable",
                 durability: Durability = "full", timeout: float = 30.0,
                 faults: Faults | None = None, readonly: bool = False) -> None:
        self.faults = faults or Faults()
        self.driver = Driver(dsn, schema=schema, durability=durability, timeout=timeout,
                             faults=self.faults, readonly=readonly)
        self.path = self.driver.path
        self.steps = StepCommit(self.driver)

    @property
    def gone(self) -> str | None:
        return None  # a server database is never deleted under us the way a file is

    def close(self) -> None:
        self.driver.close()

    def __enter__(self) -> PostgresStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def changed_elsewhere(self) -> bool:
        return self.driver.changed_elsewhere()

    # -- workflows ------------------------------------------------------------------------

    def insert_workflow(
        self, *, workflow_id: str, name: str, inputs: bytes, now: float, app_version: str,
        parent_id: str | None, owner: str | None, deadline: float | None = None,
        detached: bool = False, queue: QueueEntry | None = None,
    ) -> tuple[bool, WorkflowRow]:
        """See ``Storage.insert_workflow``."""
        total = workflow_checksum(workflow_id, name, inputs, None, None)
        if parent_id is None and queue is None:
            return self._insert_top_level(WorkflowRow(
                workflow_id, name, "pending", inputs, None, None, now, now, app_version, None,
                owner, 0, deadline, detached), total)

        def insert(conn: Connection) -> tuple[bool, WorkflowRow]:
            if parent_id is not None:
                parent = _one_workflow(conn, sql.LOCK_WORKFLOW_SHARE, parent_id)
                if parent is not None and parent.status != "pending":
                    raise ParentNotPending(parent)
            if queue is None:
                cur = conn.execute(sql.INSERT_WORKFLOW, (
                    workflow_id, name, inputs, total, now, now, app_version, parent_id, owner,
                    deadline, int(detached)))
            else:
                cur = conn.execute(sql.INSERT_ENQUEUED, (
                    workflow_id, name, inputs, total, now, now, app_version, parent_id,
                    deadline, int(detached), *queue))
            if cur.rowcount == 1:
                return True, WorkflowRow(
                    workflow_id, name, "pending" if queue is None else "enqueued", inputs,
                    None, None, now, now, app_version, parent_id,
                    owner if queue is None else None, 0, deadline, detached)
            row = _one_workflow(conn, sql.SELECT_WORKFLOW, workflow_id)
            if row is not None:
                return False, row
            assert queue is not None  # not the id: the dedup key is held
            holder = conn.execute(sql.DEDUP_HOLDER, (queue.queue, queue.dedup_key)).fetchall()
            if not holder:
                raise Retry  # its holder ended between our insert and this read
            raise Deduplicated(str(holder[0][0]))

        def verify(conn: Connection) -> bool:
            return _one_workflow(conn, sql.SELECT_WORKFLOW, workflow_id) is not None

        return self.driver.write(insert, verify)

    def _insert_top_level(self, row: WorkflowRow, total: int) -> tuple[bool, WorkflowRow]:
        """A start with no parent and no queue: one statement in autocommit (one round trip:
        no parent to lock, no dedup key to name)."""
        wid = row.workflow_id
        params = (wid, row.name, row.inputs, total, row.created_at, row.updated_at,
                  row.app_version, None, row.owner, row.deadline, int(row.detached))
        for _ in range(RETRIES):
            try:
                created = bool(self.driver.autocommit(sql.INSERT_WORKFLOW, params))
            except OutcomeUnknown as unknown:  # ours if the row there is the one we wrote
                self.driver.reread(unknown.error, lambda conn: _one_workflow(
                    conn, sql.SELECT_WORKFLOW, wid) is not None, True)
                found = self.get_workflow(wid)
                if found is None:
                    continue  # written, then deleted (gc) before the re-read: again
                self.driver.announce()
                return found == row, found
            if created:
                self.driver.announce()
                return True, row
            found = self.get_workflow(wid)
            if found is not None:
                return False, found
            # the id's row was deleted (gc) between our insert and this read: again
        raise JournalError(f"starting {wid!r} in {self.path} raced a deletion of that id "
                           f"{RETRIES} times; try again")

    def get_workflow(self, workflow_id: str) -> WorkflowRow | None:
        return self.driver.read(lambda conn: _one_workflow(conn, sql.SELECT_WORKFLOW,
                                                           workflow_id))

    def load_steps(self, workflow_id: str) -> list[StepRow]:
        return self.driver.read(lambda conn: _steps(conn, workflow_id))

    def load_workflow(self, workflow_id: str) -> tuple[WorkflowRow | None, list[StepRow]]:
        """The row, then the steps (steps only grow: never older than the row)."""

        def load(conn: Connection) -> tuple[WorkflowRow | None, list[StepRow]]:
            row = _one_workflow(conn, sql.SELECT_WORKFLOW, workflow_id)
            return row, [] if row is None else _steps(conn, workflow_id)

        return self.driver.read(load)

    def record_step(self, row: StepRow, owner: str) -> None:
        """See ``Storage.record_step``: refused (``OwnershipLostError``) for a former owner.
        Written through the group commit (``commit.py``)."""
        total = step_checksum(row)
        if not self.steps.record(row, owner, total):  # why not? raise it (or: the same
            self.driver.read(lambda conn: _refused_step(conn, row, owner, total))  # was there)

    def finish_workflow(
        self, workflow_id: str, owner: str | None, *, status: str, output: bytes | None,
        error: bytes | None, now: float, known: WorkflowRow | None = None,
    ) -> bool:
        """See ``Storage.finish_workflow``."""

        def params(name: str, inputs: bytes) -> dict[str, Any]:
            return {"status": status, "output": output, "error": error, "now": now,
                    "checksum": workflow_checksum(workflow_id, name, inputs, output, error),
                    "id": workflow_id, "owner": owner}

        def verify(conn: Connection) -> bool:
            row = _one_workflow(conn, sql.SELECT_WORKFLOW, workflow_id)
            return row is not None and row.status == status

        def finish(conn: Connection) -> bool:
            row = _fenced(conn, workflow_id, owner)
            if conn.execute(sql.FINISH_WORKFLOW, params(row.name, row.inputs)).rowcount == 1:
                return True
            _fenced(conn, workflow_id, owner)  # raises the error that says why, if fenced
            return False  # no longer pending

        if known is None:
            return self.driver.write(finish, verify)
        try:  # the usual case: one statement in autocommit (one round trip)
            done = bool(self.driver.autocommit(sql.FINISH_WORKFLOW,
                                               params(known.name, known.inputs)))
        except OutcomeUnknown as unknown:
            done = self.driver.reread(unknown.error, verify, True)
        if done:
            self.driver.announce()
            return True
        self.driver.read(lambda conn: _fenced(conn, workflow_id, owner))  # raises why, if fenced
        return False  # no longer pending

    def resume(self, workflow_id: str, now: float, *, owner: str | None,
               app_version: str | None = None) -> list[str]:
        """See ``Storage.resume``."""

        def update(conn: Connection) -> list[str]:
            row = _one_workflow(conn, sql.LOCK_WORKFLOW, workflow_id)
            if row is None:
                raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r} in {self.path}")
            if row.status in ("pending", "enqueued") and app_version is not None:
                conn.execute(sql.SET_APP_VERSION, (app_version, now, workflow_id))
            if row.status in ("pending", "enqueued", "succeeded"):
                return []
            ids = [workflow_id] + [r[0] for r in conn.execute(
                sql.CANCELLED_WITH, {"id": workflow_id, "error": row.error})]
            pending = []
            for wid in ids:
                for (status,) in conn.execute(sql.REOPEN_WORKFLOW, {
                        "now": now, "owner": owner, "version": app_version, "id": wid}):
                    if status == "pending":
                        pending.append(wid)
            return pending

        return self.driver.write(update)

    def cancel_tree(self, workflow_id: str, error: bytes, now: float) -> list[str]:
        """See ``Storage.cancel_tree``. The tree is locked level by level (``FOR UPDATE``)
        before each level's children are read: a child inserted meanwhile (its insert holds
        its parent share-locked) is either committed and seen, or refused as its parent is
        cancelled."""

        def update(conn: Connection) -> list[str]:
            done: list[str] = []
            level, seen = [workflow_id], {workflow_id}
            while level:
                for r in conn.execute(sql.LOCK_WORKFLOWS, (level,)).fetchall():
                    row = _workflow_row(r)
                    if row.status not in ("pending", "enqueued"):
                        continue
                    total = workflow_checksum(row.workflow_id, row.name, row.inputs, None,
                                              error)
                    conn.execute(sql.CANCEL_WORKFLOW, (error, total, now, row.workflow_id))
                    done.append(row.workflow_id)
                level = [r[0] for r in conn.execute(sql.CHILDREN, (level,))
                         if r[0] not in seen]
                seen.update(level)
            return done

        return self.driver.write(update)

    def fork(self, source: WorkflowRow, target_id: str, below: int, *, now: float,
             app_version: str, owner: str | None) -> int:
        """See ``Storage.fork``: one transaction (no fork, or a complete one)."""
        source_id = source.workflow_id
        total = workflow_checksum(target_id, source.name, source.inputs, None, None)
        below = min(below, 2**63 - 1)

        def copy(conn: Connection) -> int:
            cur = conn.execute(sql.INSERT_FORK, (target_id, source.name, source.inputs, total,
                                                 now, now, app_version, source.parent_id,
                                                 owner))
            if cur.rowcount != 1:
                taken = conn.execute(sql.NAME_AND_STATUS, (target_id,)).fetchall()
                what = f"a {taken[0][0]!r} workflow ({taken[0][1]})" if taken else "a workflow"
                raise WorkflowConflictError(
                    f"cannot fork {source_id!r} into {target_id!r}: that id is already taken by "
                    f"{what}, which was left as it is. Pass another new id, or none for a "
                    "random one.")
            rows = conn.execute(sql.SELECT_STEPS_BELOW, (source_id, below)).fetchall()
            for r in rows:
                row = StepRow(target_id, r[1], r[2], r[3], r[4], r[5], r[6], r[8], r[9])
                conn.execute(sql.COPY_STEP, (target_id, r[1], r[2], r[3], r[4], r[5], r[6],
                                             step_checksum(row), r[8], r[9], r[10], r[11],
                                             r[12]))
            _fork_events_and_streams(conn, source_id, target_id, rows, now)
            return len(rows)

        return self.driver.write(copy)

    def delete_finished(self, before: float) -> int:
        """Delete terminal workflows last updated before ``before`` and their rows (gc)."""

        def delete(conn: Connection) -> int:
            ids = [r[0] for r in conn.execute(sql.FINISHED_BEFORE, (before,))]
            if ids:
                for statement in (sql.DELETE_STEPS, sql.DELETE_MESSAGES, sql.DELETE_EVENTS,
                                  sql.DELETE_STREAMS, sql.DELETE_PROMISES,
                                  sql.DELETE_WORKFLOWS):
                    conn.execute(statement, (ids,))
            return len(ids)

        return self.driver.write(delete)

    def list_workflows(
        self, *, status: str | None = None, name: str | None = None,
        app_version: str | None = None, queue: str | None = None, parent: str | None = None,
        since: float | None = None, until: float | None = None, limit: int | None = None,
        offset: int = 0,
    ) -> list[WorkflowRow]:
        where, params = _filters(status=status, name=name, app_version=app_version,
                                 queue=queue, parent=parent, since=since, until=until)
        statement = sql.LIST_WORKFLOWS + where + sql.LIST_ORDER
        bound = [*params, limit, offset]
        return self.driver.read(
            lambda conn: [_workflow_row(r) for r in conn.execute(statement, bound)])

    def count_workflows(
        self, *, status: str | None = None, name: str | None = None,
        app_version: str | None = None, queue: str | None = None, parent: str | None = None,
        since: float | None = None, until: float | None = None,
    ) -> dict[str, int]:
        where, params = _filters(status=status, name=name, app_version=app_version,
                                 queue=queue, parent=parent, since=since, until=until)
        statement = sql.COUNT_WORKFLOWS.format(where=where)
        return self.driver.read(lambda conn: {
            str(status): int(n) for status, n in conn.execute(statement, params)})

    def pending_by_version(self) -> dict[str, int]:
        return self.driver.read(lambda conn: {
            str(v): int(n) for v, n in conn.execute(sql.PENDING_BY_VERSION)})

    def pending(self, app_version: str | None) -> list[tuple[str, str, str | None]]:
        return self.driver.read(lambda conn: [
            (wid, name, owner)
            for wid, name, owner in conn.execute(sql.PENDING, {"version": app_version})])

    def statuses(self, workflow_ids: Iterable[str]) -> dict[str, str]:
        ids = list(workflow_ids)
        if not ids:
            return {}
        return self.driver.read(lambda conn: {
            wid: status for wid, status in conn.execute(sql.STATUSES, (ids,))})

    # -- messages, events, streams, promises ----------------------------------------------

    def send_message(self, *, destination: str, topic: str, payload: bytes, now: float,
                     key: str | None, sender: str | None = None, step: StepRow | None = None,
                     owner: str | None = None) -> bool | None:
        total = message_checksum(destination, topic, payload)

        def send(conn: Connection) -> bool | None:
            if not conn.execute(sql.WORKFLOW_EXISTS, (destination,)).fetchall():
                return None
            cur = conn.execute(sql.INSERT_MESSAGE, (destination, topic, payload, total, sender,
                                                    key, now))
            sent = cur.rowcount == 1
            if step is not None:
                assert owner is not None
                _write_step(conn, step, owner, step_checksum(step))
            return sent

        return self.driver.write(send)

    def take_message(self, workflow_id: str, topic: str, step: StepRow, owner: str, *,
                     open_row: bool) -> bytes | None:
        def take(conn: Connection) -> bytes | None:
            found = conn.execute(sql.OLDEST_UNREAD, (workflow_id, topic)).fetchall()
            if not found:
                if open_row:
                    _write_step(conn, step, owner, step_checksum(step))
                return None
            message = _message_row(found[0], self.path)
            conn.execute(sql.CONSUME_MESSAGE, (step.step, step.started_at, message.seq))
            done = step._replace(output=message.payload, finished_at=step.started_at)
            _write_step(conn, done, owner, step_checksum(done))
            return message.payload

        return self.driver.write(take)

    def unread_topics(self, workflow_id: str) -> set[str]:
        return self.driver.read(lambda conn: {
            r[0] for r in conn.execute(sql.UNREAD_TOPICS, (workflow_id,))})

    def mailbox(self, workflow_id: str) -> list[MessageRow]:
        return self.driver.read(lambda conn: [
            _message_row(r, self.path) for r in conn.execute(sql.MAILBOX, (workflow_id,))])

    def set_event(self, workflow_id: str, key: str, value: bytes, now: float, step: StepRow,
                  owner: str) -> None:
        total = checksum(workflow_id, key, value)

        def put(conn: Connection) -> None:
            conn.execute(sql.UPSERT_EVENT, (workflow_id, key, value, total, now))
            _write_step(conn, step, owner, step_checksum(step))

        self.driver.write(put)

    def get_event(self, workflow_id: str, key: str) -> bytes | None:
        def get(conn: Connection) -> bytes | None:
            found = conn.execute(sql.SELECT_EVENT, (workflow_id, key)).fetchall()
            if not found:
                return None
            value, total = found[0]
            self._check(checksum(workflow_id, key, value), total,
                        f"event {key!r} of workflow {workflow_id!r}")
            return bytes(value)

        return self.driver.read(get)

    def events(self, workflow_id: str) -> dict[str, bytes]:
        def get(conn: Connection) -> dict[str, bytes]:
            found = {}
            for key, value, total in conn.execute(sql.SELECT_EVENTS, (workflow_id,)):
                self._check(checksum(workflow_id, key, value), total,
                            f"event {key!r} of workflow {workflow_id!r}")
                found[key] = bytes(value)
            return found

        return self.driver.read(get)

    def write_stream(self, workflow_id: str, key: str, value: bytes | None, now: float,
                     step: StepRow, owner: str) -> int | None:
        def append(conn: Connection) -> int | None:
            conn.execute(sql.STREAM_LOCK, (workflow_id, key))
            end = conn.execute(sql.STREAM_END, (workflow_id, key)).fetchall()
            position, closed = int(end[0][0]), bool(end[0][1])
            if closed:
                return None
            total = checksum(workflow_id, key, str(position), value)
            conn.execute(sql.INSERT_STREAM_ITEM, (workflow_id, key, position, value, total, now))
            done = step._replace(output=str(position).encode())
            _write_step(conn, done, owner, step_checksum(done))
            return position

        return self.driver.write(append)

    def read_stream(self, workflow_id: str, key: str, position: int,
                    limit: int) -> tuple[list[tuple[int, bytes]], bool]:
        def read(conn: Connection) -> tuple[list[tuple[int, bytes]], bool]:
            items: list[tuple[int, bytes]] = []
            closed = False
            for at, value, total in conn.execute(sql.READ_STREAM,
                                                 (workflow_id, key, position, limit)):
                self._check(checksum(workflow_id, key, str(at), value), total,
                            f"item {at} of stream {key!r} of workflow {workflow_id!r}")
                if value is None:
                    closed = True
                    break
                items.append((int(at), bytes(value)))
            if not items and not closed:
                closed = bool(conn.execute(sql.STREAM_END, (workflow_id, key)).fetchall()[0][1])
            return items, closed

        return self.driver.read(read)

    def streams(self, workflow_id: str) -> dict[str, tuple[int, bool]]:
        return self.driver.read(lambda conn: {
            key: (int(count), bool(closed))
            for key, count, closed in conn.execute(sql.SELECT_STREAMS, (workflow_id,))})

    def create_promise(self, promise_id: str, workflow_id: str, now: float, step: StepRow,
                       owner: str) -> None:
        total = promise_checksum(promise_id, workflow_id, None, None)

        def create(conn: Connection) -> None:
            conn.execute(sql.INSERT_PROMISE, (promise_id, workflow_id, step.step, total, now))
            _write_step(conn, step, owner, step_checksum(step))

        self.driver.write(create)

    def settle_promise(self, promise_id: str, *, output: bytes | None, error: bytes | None,
                       now: float) -> tuple[PromiseRow, bool] | None:
        def settle(conn: Connection) -> tuple[PromiseRow, bool] | None:
            found = conn.execute(sql.LOCK_PROMISE, (promise_id,)).fetchall()
            if not found:
                return None
            row = self._promise_row(found[0])
            if row.settled_at is not None:
                return row, False
            total = promise_checksum(promise_id, row.workflow_id, output, error)
            conn.execute(sql.SETTLE_PROMISE, (output, error, total, now, promise_id))
            return row._replace(output=output, error=error, settled_at=now), True

        def verify(conn: Connection) -> bool:
            found = conn.execute(sql.SELECT_PROMISE, (promise_id,)).fetchall()
            return bool(found) and found[0][7] == now and found[0][3] == output

        return self.driver.write(settle, verify)

    def get_promise(self, promise_id: str) -> PromiseRow | None:
        def get(conn: Connection) -> PromiseRow | None:
            found = conn.execute(sql.SELECT_PROMISE, (promise_id,)).fetchall()
            return self._promise_row(found[0]) if found else None

        return self.driver.read(get)

    def promises(self, workflow_id: str) -> list[PromiseRow]:
        return self.driver.read(lambda conn: [
            self._promise_row(r) for r in conn.execute(sql.SELECT_PROMISES, (workflow_id,))])

    def _promise_row(self, r: Sequence[Any]) -> PromiseRow:
        promise_id, workflow_id, step, output, error, total, created, settled = r
        self._check(promise_checksum(promise_id, workflow_id, output, error), total,
                    f"promise {promise_id!r} of workflow {workflow_id!r}")
        return PromiseRow(promise_id, workflow_id, step, output, error, created, settled)

    def _check(self, computed: int, stored: int, what: str) -> None:
        if computed != stored:
            raise JournalCorruptError(
                f"{what} in {self.path} fails its checksum: the row was changed outside "
                "litedurable or the storage is failing. Restore a backup of the database.")

    # -- queues ---------------------------------------------------------------------------

    def dequeue(self, spec: QueueSpec, owner: str, *, clock: Callable[[], float], limit: int,
                names: Sequence[str], app_version: str | None) -> Dequeued:
        """See ``Storage.dequeue``: under the queue's advisory lock, so peers dequeuing from
        one queue count, check and claim one after another (limits exact across them). A
        read without the lock first sees whether anything waits at all."""
        params: dict[str, Any] = {"queue": spec.name, "names": list(names),
                                  "version": app_version}
        if limit <= 0 or not self.driver.read(
                lambda conn: conn.execute(sql.ANY_ENQUEUED, params).fetchall()):
            return Dequeued([], None)

        def take(conn: Connection) -> Dequeued:
            conn.execute(sql.QUEUE_LOCK, (self.driver.schema, spec.name))
            now = clock()  # once the lock is ours: the instant the limits are judged
            picked = _pick(conn, spec, owner, now, limit, params)
            if not picked.workflow_ids:
                return picked
            got = {r[0] for r in conn.execute(sql.DEQUEUE, {
                "owner": owner, "now": now, "ids": picked.workflow_ids})}
            taken = [wid for wid in picked.workflow_ids if wid in got]
            conn.execute(sql.INSERT_QUEUE_STARTS, (spec.name, now, len(taken)))
            longest = max(RECENT_STARTS,
                          spec.rate_limit[1] if spec.rate_limit else 0)
            conn.execute(sql.PRUNE_QUEUE_STARTS, (spec.name, now - longest))
            if spec.rate_limit is None:
                return Dequeued(taken, None)
            _, reopens_at = _rate_window(conn, spec.name, spec.rate_limit, now)
            return Dequeued(taken, reopens_at)

        return self.driver.write(take)

    def requeue(self, workflow_ids: Sequence[str], owner: str, now: float) -> list[str]:
        if not workflow_ids:
            return []
        ids = list(workflow_ids)
        return self.driver.write(lambda conn: [
            str(r[0]) for r in conn.execute(sql.REQUEUE, (now, ids, owner))])

    def declare_queue(self, spec: QueueSpec, now: float) -> None:
        most, per = spec.rate_limit if spec.rate_limit is not None else (None, None)
        values = (spec.name, spec.concurrency, spec.worker_concurrency, most, per,
                  int(spec.partitioned), now)
        self.driver.write(_execute(sql.UPSERT_QUEUE, values))

    def queue_stats(self, now: float) -> list[QueueStats]:
        def read(conn: Connection) -> list[QueueStats]:
            specs = {
                str(r[0]): QueueSpec(str(r[0]), r[1], r[2],
                                     None if r[3] is None else (int(r[3]), float(r[4])),
                                     bool(r[5]))
                for r in conn.execute(sql.SELECT_QUEUES)
            }
            counts = {r[0]: (int(r[1]), int(r[2]), int(r[3]), r[4])
                      for r in conn.execute(sql.QUEUE_COUNTS, (now - RECENT_STARTS,))}
            return [QueueStats(specs.get(name, QueueSpec(name)),
                               *counts.get(name, (0, 0, 0, None)))
                    for name in sorted({*specs, *counts})]

        return self.driver.read(read)

    # -- ownership ------------------------------------------------------------------------

    def heartbeat(self, row: OwnerRow) -> None:
        """See ``Storage.heartbeat``: stamped with the server's clock, not ``row.heartbeat``
        (the machines sharing a database need not agree on the time)."""
        identity = (row.owner, row.host, row.pid, row.lease, row.pid_namespace)
        self.driver.write(_execute(sql.UPSERT_OWNER, identity), notify=False)

    def owners(self) -> Owners:
        """See ``Storage.owners``: the rows and the server's clock in one statement."""

        def read(conn: Connection) -> Owners:
            found = conn.execute(sql.SELECT_OWNERS).fetchall()
            return Owners({r[1]: OwnerRow(*r[1:]) for r in found if r[1] is not None},
                          float(found[0][0]))

        return self.driver.read(read)

    def claim(self, claims: Iterable[tuple[str, str | None]], owner: str, *,
              forget: Sequence[tuple[str, float]] = ()) -> dict[str, int]:
        """See ``Storage.claim``: one compare-and-swap UPDATE for all (of two concurrent
        claimers expecting the same owner, only one takes a workflow)."""
        claims = list(claims)
        if not claims and not forget:
            return {}
        ids = [wid for wid, _ in claims]
        olds = [old for _, old in claims]

        def take(conn: Connection) -> dict[str, int]:
            found = {wid: int(n) for wid, n in conn.execute(sql.CLAIM, {
                "new": owner, "ids": ids, "olds": olds})} if claims else {}
            if forget:
                conn.execute(sql.FORGET_OWNERS, ([o for o, _ in forget], [b for _, b in forget]))
            return {wid: found[wid] for wid in ids if wid in found}

        return self.driver.write(take)

    def release(self, owner: str) -> None:
        def drop(conn: Connection) -> None:
            conn.execute(sql.DISOWN, (owner,))
            conn.execute(sql.DELETE_OWNERS, ([owner],))

        self.driver.write(drop)

    # -- schedules ------------------------------------------------------------------------

    def upsert_schedule(self, row: ScheduleRow, now: float) -> None:
        values = (row.name, row.workflow, row.cron, row.tz, int(row.catch_up), int(row.paused),
                  row.last_fire, now, now)
        self.driver.write(_execute(sql.UPSERT_SCHEDULE, values))

    def schedules(self) -> list[ScheduleRow]:
        return self.driver.read(lambda conn: [
            ScheduleRow(name, workflow, cron, tz, bool(catch_up), bool(paused), last_fire,
                        created, updated)
            for name, workflow, cron, tz, catch_up, paused, last_fire, created, updated
            in conn.execute(sql.SELECT_SCHEDULES)])

    def pause_schedule(self, name: str, paused: bool, now: float) -> bool:
        return self.driver.write(
            lambda conn: conn.execute(sql.PAUSE_SCHEDULE, (int(paused), now, name)).rowcount == 1)

    def delete_schedule(self, name: str) -> bool:
        return self.driver.write(
            lambda conn: conn.execute(sql.DELETE_SCHEDULE, (name,)).rowcount == 1)

    def schedule_fired(self, name: str, fire: float) -> None:
        self.driver.write(_execute(sql.SCHEDULE_FIRED, (fire, fire, name)))

    # -- health ---------------------------------------------------------------------------

    def quick_check(self) -> str:
        """"ok" when the server answers at this litedurable's schema, else what is wrong."""
        try:
            self.driver.read(lambda conn: conn.execute(sql.PING).fetchall())
        except JournalError as exc:
            return f"{type(exc).__name__}: {exc}"
        return "ok"

    def check(self) -> list[str]:
        return transfer.check(self.driver)

    def backup(self, destination: str) -> None:
        raise UsageError(
            f"backup of a PostgreSQL journal is not litedurable's: use pg_dump --schema="
            f"{self.driver.schema} (or the server's base backups); nothing was written to "
            f"{destination}")

    def export_workflow(self, workflow_id: str) -> dict[str, Any] | None:
        return transfer.export_workflow(self.driver, workflow_id)

    def import_workflows(self, records: list[dict[str, Any]]) -> list[str]:
        return transfer.import_workflows(self.driver, records)


# -- rows ---------------------------------------------------------------------------------


def _execute(statement: str, params: Sequence[Any]) -> Callable[[Connection], None]:
    """A write of one statement."""

    def run(conn: Connection) -> None:
        conn.execute(statement, params)

    return run


def _filters(*, status: str | None = None, name: str | None = None,
             app_version: str | None = None, queue: str | None = None,
             parent: str | None = None, since: float | None = None,
             until: float | None = None) -> tuple[str, list[Any]]:
    where, params = [], []
    for test, value in (("status = %s", status), ("name = %s", name),
                        ("app_version = %s", app_version), ("queue = %s", queue),
                        ("parent_id = %s", parent), ("created_at >= %s", since),
                        ("created_at < %s", until)):
        if value is not None:
            where.append(test)
            params.append(value)
    return (" WHERE " + " AND ".join(where) if where else ""), params


def _workflow_row(r: Sequence[Any]) -> WorkflowRow:
    (wid, name, status, inputs, output, error, total, created, updated, version, parent, owner,
     attempts, deadline, detached) = r
    if workflow_checksum(wid, name, inputs, output, error) != total:
        raise JournalCorruptError(
            f"workflow {wid!r} fails its checksum: the row was changed outside litedurable or "
            "the storage is failing. Restore a backup of the database.")
    return WorkflowRow(wid, name, status, inputs, output, error, created, updated, version,
                       parent, owner, attempts, deadline, bool(detached))


def _one_workflow(conn: Connection, statement: str, workflow_id: str) -> WorkflowRow | None:
    found = conn.execute(statement, (workflow_id,)).fetchall()
    return _workflow_row(found[0]) if found else None


def _steps(conn: Connection, workflow_id: str) -> list[StepRow]:
    rows = []
    for r in conn.execute(sql.SELECT_STEPS, (workflow_id,)):
        row = StepRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[8], r[9], r[10], r[11], r[12])
        if step_checksum(row) != r[7]:
            raise JournalCorruptError(
                f"step {row.step} of workflow {workflow_id!r} fails its checksum: the row was "
                "changed outside litedurable or the storage is failing. Restore a backup, or "
                "fork the workflow from before that step.")
        rows.append(row)
    return rows


def _step_checksum(conn: Connection, row: StepRow) -> int | None:
    found = conn.execute(sql.STEP_CHECKSUM, (row.workflow_id, row.step)).fetchall()
    return int(found[0][0]) if found else None


def _write_step(conn: Connection, row: StepRow, owner: str, total: int) -> None:
    """Write ``row`` in the caller's transaction, fenced on ``owner`` (see ``INSERT_STEP``)."""
    cur = conn.execute(sql.INSERT_STEP, step_values(row, owner, total))
    if cur.rowcount == 0:
        _refused_step(conn, row, owner, total)


def _refused_step(conn: Connection, row: StepRow, owner: str, total: int) -> None:
    """After a step write that wrote nothing: raise why, unless the same outcome is there."""
    _fenced(conn, row.workflow_id, owner)  # raises the error that says which
    found = _step_checksum(conn, row)
    if found is not None and found != total:
        raise OwnershipLostError(
                f"step {row.step} of workflow {row.workflow_id!r} is already recorded with "
                f"another outcome: this run of it is stale (its owner {owner!r} lost the "
                "workflow and took it back meanwhile). The write was refused; the workflow "
                "continues from the journal.")


def _fenced(conn: Connection, workflow_id: str, owner: str | None) -> WorkflowRow:
    """The workflow's row if ``owner`` (None: anyone) may write it, else the refusal."""
    row = _one_workflow(conn, sql.SELECT_WORKFLOW, workflow_id)
    if row is None:
        raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
    if owner is not None and row.owner is None:
        raise OwnershipLostError(
            f"workflow {workflow_id!r} is no longer owned by {owner!r}: it was cancelled, or "
            "its App closed. The write was refused.")
    if owner is not None and row.owner != owner:
        raise OwnershipLostError(
            f"workflow {workflow_id!r} is now owned by {row.owner!r}, not {owner!r}: this "
            "process was presumed dead (its lease lapsed) and another took the workflow over. "
            "The write was refused; the new owner continues the workflow.")
    return row


def _message_row(r: Sequence[Any], path: str) -> MessageRow:
    seq, destination, topic, payload, total, sender, key, created, step, consumed = r
    if message_checksum(destination, topic, payload) != total:
        raise JournalCorruptError(
            f"message {seq} to workflow {destination!r} in {path} fails its checksum: the row "
            "was changed outside litedurable or the storage is failing.")
    return MessageRow(seq, destination, topic, payload, sender, key, created, step, consumed)


def _rate_window(conn: Connection, queue: str, rate: tuple[int, float],
                 now: float) -> tuple[int, float | None]:
    most, per = rate
    found = conn.execute(sql.QUEUE_WINDOW, {"queue": queue, "now": now, "per": per}).fetchall()
    recent, oldest = int(found[0][0]), found[0][1]
    return recent, float(oldest) + per if recent >= most and oldest is not None else None


def _pick(conn: Connection, spec: QueueSpec, owner: str, now: float, limit: int,
          params: dict[str, Any]) -> Dequeued:
    """The workflows the limits let go now, in queue order (the caller holds the queue lock)."""
    budget, reopens_at = limit, None
    counts = conn.execute(sql.QUEUE_RUNNING, {"queue": spec.name, "owner": owner}).fetchall()
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
        return Dequeued([r[0] for r in conn.execute(sql.NEXT_ENQUEUED,
                                                    {**params, "limit": budget})], None)
    most = spec.concurrency
    room = {key: most - int(count) for key, count
            in conn.execute(sql.QUEUE_RUNNING_BY_PARTITION, (spec.name,))}
    heads: list[tuple[int, int, str]] = []
    for (key,) in conn.execute(sql.WAITING_PARTITIONS, (spec.name,)).fetchall():
        free = min(room.get(key, most), budget)
        if free > 0:
            heads += [(priority, seq, wid) for wid, priority, seq in conn.execute(
                sql.NEXT_IN_PARTITION, {**params, "key": key, "limit": free})]
    return Dequeued([wid for _, _, wid in sorted(heads)[:budget]], None)


def _fork_events_and_streams(conn: Connection, source_id: str, target_id: str,
                             rows: Sequence[Sequence[Any]], now: float) -> None:
    """Give a fork the events and streams its copied steps made (as the SQLite backend)."""
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
                                                  (source_id, key, writes.get(key, 0))).fetchall():
            conn.execute(sql.INSERT_STREAM_ITEM, (target_id, key, at, value,
                                                  checksum(target_id, key, str(at), value),
                                                  created))
            count = at + 1
        if key in closed:
            conn.execute(sql.INSERT_STREAM_ITEM, (target_id, key, count, None,
                                                  checksum(target_id, key, str(count), None),
                                                  now))


def _is_a_storage(storage: PostgresStorage) -> Storage:
    """Never called: mypy checks here that ``PostgresStorage`` has every operation."""
    return storage
