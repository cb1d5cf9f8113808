"""The storage interface: every operation the runtime and the App ask of a journal.

The engine talks to storage only through ``Storage``, a typed protocol of operations named
after what they do (``insert_workflow``, ``record_step``, ``claim``, ``finish_workflow``, ...),
in plain values: ``str``, ``bytes``, ``int``, ``float`` and the row tuples below. Storage makes
no workflow decisions: it stores what it is told, refuses writes from a workflow's former owner
(fencing), and reports what it finds. Each operation is atomic, and is durable when it returns.

``_backends.open_storage`` picks the implementation from the location: a file path is an
SQLite file (``litedurable._sqlite``). A server database implements the same operations;
nothing here is SQLite-only: "another process committed" is ``changed_elsewhere()``, however
a backend learns it (SQLite's ``data_version``, PostgreSQL's ``LISTEN``).

Payload integrity is the storage's duty too: each row carries a CRC-32 of its payloads
(``workflow_checksum``, ``step_checksum``), checked on every read, so bytes changed under the
database (which no database check sees) are reported instead of replayed.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

from ._errors import DurableError, JournalError

__all__ = [
    "RECENT_STARTS",
    "Deduplicated",
    "Dequeued",
    "Durability",
    "MessageRow",
    "NoJournalError",
    "OwnerRow",
    "Owners",
    "ParentNotPending",
    "PromiseRow",
    "QueueEntry",
    "QueueSpec",
    "QueueStats",
    "ScheduleRow",
    "StepRow",
    "Storage",
    "WorkflowRow",
    "checksum",
    "message_checksum",
    "promise_checksum",
    "step_checksum",
    "workflow_checksum",
]

Durability = Literal["full", "normal"]

RECENT_STARTS = 60.0
"""Seconds of a queue's dequeues ``queue_stats`` counts (``QueueInfo.started_last_minute``)."""


# Rows are named tuples, not frozen dataclasses: one is built per step and per workflow read,
# and a frozen dataclass's __init__ alone costs more than the rest of a row's Python.
class NoJournalError(JournalError):
    """A read-only open found no journal there (a server database's schema holds none): the
    CLI says "not found", as for a missing file, and creates nothing."""


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
    # Diagnostics, outside the checksum (nothing replays them): where the call was made
    # ("file.py:23"), a retried step's failed attempts (JSON: [[start, end, "Type: msg"], ...]),
    # and the owner that recorded the row (set by the storage on read).
    site: str | None = None
    attempts: str | None = None
    owner: str | None = None


class MessageRow(NamedTuple):
    """A message in a workflow's mailbox; ``consumed_step`` is the step that received it."""

    seq: int
    destination: str
    topic: str
    payload: bytes
    sender: str | None
    key: str | None
    created_at: float
    consumed_step: int | None
    consumed_at: float | None


class PromiseRow(NamedTuple):
    """A durable promise of workflow ``workflow_id`` (made at ``step``); settled once."""

    promise_id: str
    workflow_id: str
    step: int
    output: bytes | None
    error: bytes | None
    created_at: float
    settled_at: float | None


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


class Owners(NamedTuple):
    """Every owner row (by token), and ``now``: the journal's clock, read with them.

    A heartbeat is judged against the clock that stamped it, never the judge's own: on
    several machines, one whose clock ran ahead would presume every live owner dead (and run
    their workflows a second time), one behind would never take over a dead one.
    """

    rows: dict[str, OwnerRow]
    now: float


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A queue's limits as an App declares them (``app.queue``); see DESIGN 1c.

    ``concurrency`` bounds the queue's ``pending`` workflows across every process (per
    partition key when ``partitioned``), ``worker_concurrency`` those of one owner, and
    ``rate_limit`` = (n, per seconds) the dequeues in any rolling window of that length.
    """

    name: str
    concurrency: int | None = None
    worker_concurrency: int | None = None
    rate_limit: tuple[int, float] | None = None
    partitioned: bool = False


class QueueEntry(NamedTuple):
    """Where an enqueued workflow waits, and what its dequeue applies."""

    queue: str
    priority: int = 0
    dedup_key: str | None = None
    partition_key: str | None = None
    timeout: float | None = None  # seconds from dequeue to the deadline


class Dequeued(NamedTuple):
    """What one ``dequeue`` took: the workflows now pending under the caller, and, when the
    rate limit held back workflows that wait, the instant its window lets the next one go."""

    workflow_ids: list[str]
    reopens_at: float | None


class QueueStats(NamedTuple):
    """A queue as ``queue_stats`` finds it (the limits as last declared, then the counts)."""

    spec: QueueSpec
    enqueued: int
    running: int
    started_recently: int
    oldest_enqueued_at: float | None


class Deduplicated(DurableError):
    """``insert_workflow`` wrote nothing: ``existing_id`` holds the queue's dedup key."""

    def __init__(self, existing_id: str) -> None:
        super().__init__(f"the dedup key is held by workflow {existing_id!r}")
        self.existing_id = existing_id


class ParentNotPending(DurableError):
    """``insert_workflow`` wrote nothing: the parent it names is no longer pending.

    Checked inside the insert's transaction (a child can never be created under a parent that
    was cancelled meanwhile); what that means for the workflow is the runtime's to decide.
    """

    def __init__(self, parent: WorkflowRow) -> None:
        super().__init__(f"workflow {parent.workflow_id!r} is {parent.status}")
        self.parent = parent


class Storage(Protocol):
    """The operations of a journal. ``owner`` arguments fence: the write is refused with
    ``OwnershipLostError`` unless ``owner`` owns the workflow (None: anyone may write)."""

    path: str
    """Where the journal is, for messages."""

    @property
    def gone(self) -> str | None:
        """Why every write is refused from now on (the file was deleted or replaced), or None."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Storage: ...

    def __exit__(self, *exc_info: object) -> None: ...

    # -- workflows ------------------------------------------------------------------------

    def insert_workflow(
        self, *, workflow_id: str, name: str, inputs: bytes, now: float, app_version: str,
        parent_id: str | None, owner: str | None, deadline: float | None = None,
        detached: bool = False, queue: QueueEntry | None = None,
    ) -> tuple[bool, WorkflowRow]:
        """Create a pending workflow owned by ``owner`` (None: by no process yet, taken by the
        next recovery) unless the id exists: (created, row).

        With ``queue``, the workflow is ``enqueued`` instead, owned by no one, until a
        ``dequeue`` takes it. Raises ``ParentNotPending`` (writing nothing) if ``parent_id``
        names a workflow that is not pending, and ``Deduplicated`` (writing nothing) if the
        queue entry's dedup key is held by an enqueued or pending workflow of that queue."""
        ...

    def get_workflow(self, workflow_id: str) -> WorkflowRow | None: ...

    def load_workflow(self, workflow_id: str) -> tuple[WorkflowRow | None, list[StepRow]]:
        """The row and every step row, in one read (what a run needs to resume)."""
        ...

    def load_steps(self, workflow_id: str) -> list[StepRow]: ...

    def record_step(self, row: StepRow, owner: str) -> None:
        """Insert a finished step row, or complete an open one (a select awaiting decision)."""
        ...

    def finish_workflow(
        self, workflow_id: str, owner: str | None, *, status: str, output: bytes | None,
        error: bytes | None, now: float, known: WorkflowRow | None = None,
    ) -> bool:
        """Record the final status; False (nothing written) if no longer pending."""
        ...

    def resume(self, workflow_id: str, now: float, *, owner: str | None,
               app_version: str | None = None) -> list[str]:
        """Make a finished workflow pending again with the descendants its cancel reached."""
        ...

    def cancel_tree(self, workflow_id: str, error: bytes, now: float) -> list[str]:
        """Cancel a workflow and its pending non-detached descendants; the ids cancelled."""
        ...

    def fork(self, source: WorkflowRow, target_id: str, below: int, *, now: float,
             app_version: str, owner: str | None) -> int:
        """Create ``target_id`` from ``source``'s inputs and its steps below ``below``."""
        ...

    def delete_finished(self, before: float) -> int: ...

    def list_workflows(
        self, *, status: str | None = None, name: str | None = None,
        app_version: str | None = None, queue: str | None = None, parent: str | None = None,
        since: float | None = None, until: float | None = None, limit: int | None = None,
        offset: int = 0,
    ) -> list[WorkflowRow]:
        """Workflows matching every filter given (``since``/``until``: created at or after,
        before; ``parent``: its children), newest first."""
        ...

    def count_workflows(
        self, *, status: str | None = None, name: str | None = None,
        app_version: str | None = None, queue: str | None = None, parent: str | None = None,
        since: float | None = None, until: float | None = None,
    ) -> dict[str, int]:
        """How many workflows match the filters of ``list_workflows``, by status."""
        ...

    def pending_by_version(self) -> dict[str, int]: ...

    def pending(self, app_version: str | None) -> list[tuple[str, str, str | None]]:
        """(workflow_id, name, owner) of each pending workflow (of ``app_version``), oldest
        first."""
        ...

    def statuses(self, workflow_ids: Iterable[str]) -> dict[str, str]: ...

    def changed_elsewhere(self) -> bool:
        """True if another process (or App) committed since the last call: cheap, polled."""
        ...

    # -- messages, events, streams, promises ----------------------------------------------
    # Each write a workflow makes here commits in one transaction with ``step``, the step row
    # that records it (fenced on ``owner``), so a crash can neither lose nor repeat it.

    def send_message(self, *, destination: str, topic: str, payload: bytes, now: float,
                     key: str | None, sender: str | None = None, step: StepRow | None = None,
                     owner: str | None = None) -> bool | None:
        """Put a message in ``destination``'s mailbox (and record ``step``, if given).

        True: sent. False: ``destination`` already has a message with ``key`` (nothing
        written). None: there is no workflow ``destination`` (nothing written)."""
        ...

    def take_message(self, workflow_id: str, topic: str, step: StepRow, owner: str, *,
                     open_row: bool) -> bytes | None:
        """Consume the oldest unread message on ``topic`` and record it as ``step`` (its
        output the payload), in one transaction; return the payload. With none unread,
        write ``step`` as an open row if ``open_row``, and return None."""
        ...

    def unread_topics(self, workflow_id: str) -> set[str]:
        """The topics that have unread messages for ``workflow_id``."""
        ...

    def mailbox(self, workflow_id: str) -> list[MessageRow]:
        """Every message sent to ``workflow_id``, read or not, oldest first."""
        ...

    def set_event(self, workflow_id: str, key: str, value: bytes, now: float, step: StepRow,
                  owner: str) -> None:
        """Set (or replace) the workflow's event ``key`` and record ``step``."""
        ...

    def get_event(self, workflow_id: str, key: str) -> bytes | None: ...

    def events(self, workflow_id: str) -> dict[str, bytes]: ...

    def write_stream(self, workflow_id: str, key: str, value: bytes | None, now: float,
                     step: StepRow, owner: str) -> int | None:
        """Append ``value`` to the stream (None closes it) and record ``step``; the item's
        position, or None (nothing written) if the stream is already closed."""
        ...

    def read_stream(self, workflow_id: str, key: str, position: int,
                    limit: int) -> tuple[list[tuple[int, bytes]], bool]:
        """Up to ``limit`` items from ``position`` on, and whether the stream is closed."""
        ...

    def streams(self, workflow_id: str) -> dict[str, tuple[int, bool]]:
        """Each stream of the workflow: (items written, closed)."""
        ...

    def create_promise(self, promise_id: str, workflow_id: str, now: float, step: StepRow,
                       owner: str) -> None: ...

    def settle_promise(self, promise_id: str, *, output: bytes | None, error: bytes | None,
                       now: float) -> tuple[PromiseRow, bool] | None:
        """Settle a promise unless it is settled already: (the row as it is now, whether this
        call settled it), or None if there is no such promise."""
        ...

    def get_promise(self, promise_id: str) -> PromiseRow | None: ...

    def promises(self, workflow_id: str) -> list[PromiseRow]: ...

    # -- queues ---------------------------------------------------------------------------

    def dequeue(self, spec: QueueSpec, owner: str, *, clock: Callable[[], float], limit: int,
                names: Sequence[str], app_version: str | None) -> Dequeued:
        """Take up to ``limit`` of the queue's enqueued workflows for ``owner``, in order
        (lower priority first, then enqueue order), as far as ``spec``'s limits allow.

        One atomic operation with the claim: each taken workflow becomes pending, owned by
        ``owner``, its dequeue time ``clock()`` read once the queue is serialized (not before:
        a dequeue that waited there would date its workflows from before the wait, and judge
        the limits at an instant already past) and its deadline (if its entry has a timeout)
        set from it; two callers never take the same workflow, and no limit is ever exceeded by
        callers racing. Counting and claiming must be serialized per queue (SQLite has one
        writer; a server database takes a per-queue lock, e.g. an advisory transaction lock,
        since its snapshots would let two dequeues count the same free slot). "Enqueue
        order" is the order the enqueues committed (SQLite: the rowid; elsewhere an explicit
        sequence, kept across a requeue). Only workflows named in ``names`` (and of
        ``app_version``, if given) are taken. A backend wakes other processes' consumers
        through ``changed_elsewhere`` after an enqueue and after a slot is freed."""
        ...

    def requeue(self, workflow_ids: Sequence[str], owner: str, now: float) -> list[str]:
        """Put those of ``workflow_ids`` that are queued, pending and owned by ``owner`` back
        in their queue (``enqueued``, owned by no one, at their old place); the ids moved.

        Recovery does this with the queued workflows it claims, so a dead consumer's work is
        dequeued within the queue's limits again instead of running past them."""
        ...

    def declare_queue(self, spec: QueueSpec, now: float) -> None:
        """Store (or update) a queue's declared limits, for tools that list queues."""
        ...

    def queue_stats(self, now: float) -> list[QueueStats]:
        """Every queue that is declared or holds workflows, by name; ``started_recently``
        counts dequeues in the ``RECENT_STARTS`` seconds before ``now`` (a backend keeps at
        least that long of them, and the longest rate window)."""
        ...

    # -- ownership ------------------------------------------------------------------------

    def heartbeat(self, row: OwnerRow) -> None:
        """Create ``row.owner``'s lease row, or refresh its heartbeat, stamped with the
        journal's clock (``row.heartbeat`` is not used): a server database's own clock (every
        machine's heartbeats on one clock), a file journal's machine's wall clock."""
        ...

    def owners(self) -> Owners:
        """Every owner row, and the journal's clock (the one ``heartbeat`` stamps with) read
        in the same statement or transaction, no later than the rows (so an owner's silence
        is never overstated: a heartbeat that commits between the two looks fresher, not
        staler)."""
        ...

    def claim(self, claims: Iterable[tuple[str, str | None]], owner: str, *,
              forget: Sequence[tuple[str, float]] = ()) -> dict[str, int]:
        """Compare-and-swap each (workflow id, expected owner) to ``owner``; attempt counts.
        Deletes each owner row of ``forget`` (owner, the heartbeat it was judged dead on)
        unless it beat again since: an owner that came back keeps its row."""
        ...

    def release(self, owner: str) -> None: ...

    # -- schedules ------------------------------------------------------------------------

    def upsert_schedule(self, row: ScheduleRow, now: float) -> None: ...

    def schedules(self) -> list[ScheduleRow]: ...

    def pause_schedule(self, name: str, paused: bool, now: float) -> bool: ...

    def delete_schedule(self, name: str) -> bool: ...

    def schedule_fired(self, name: str, fire: float) -> None: ...

    # -- health ---------------------------------------------------------------------------

    def quick_check(self) -> str:
        """"ok" when the store is sound, else what is damaged (never raises for damage)."""
        ...

    def check(self) -> list[str]:
        """Every problem found: the database's own check, then every row's checksum (each
        damaged row named). Empty when the journal is sound."""
        ...

    def backup(self, destination: str) -> None:
        """Write a consistent copy of the journal to the new file ``destination`` while
        others write. A server database may refuse (``UsageError``) and name its own tool
        (``pg_dump``)."""
        ...

    # -- moving workflows between journals ------------------------------------------------

    def export_workflow(self, workflow_id: str) -> dict[str, Any] | None:
        """The workflow and every row that belongs to it as a JSON-able record (None: no
        such workflow); ``import_workflows`` in another journal takes it back."""
        ...

    def import_workflows(self, records: list[dict[str, Any]]) -> list[str]:
        """Insert exported workflows, ids and checksums kept, all in one transaction: every
        record or none; their ids. ``WorkflowConflictError`` naming every id that
        exists here (or repeats in ``records``), ``JournalError`` for a record this version
        cannot read: nothing written."""
        ...


# -- payload integrity ----------------------------------------------------------------------

_pack_length = struct.Struct("<q").pack
_NONE_LENGTH = _pack_length(-1)


def checksum(*parts: bytes | str | None) -> int:
    """CRC-32 over length-prefixed parts, so a flipped payload byte is noticed on read.

    The parts are joined and hashed in one call (CRC-32 streams, so this equals hashing them
    one by one, as files written by earlier versions were).
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


def message_checksum(destination: str, topic: str, payload: bytes) -> int:
    return checksum(destination, topic, payload)


def promise_checksum(promise_id: str, workflow_id: str, output: bytes | None,
                     error: bytes | None) -> int:
    return checksum(promise_id, workflow_id, output, error)


def workflow_checksum(
    workflow_id: str, name: str, inputs: bytes, output: bytes | None, error: bytes | None
) -> int:
    return checksum(workflow_id, name, inputs, output, error)


def step_checksum(row: StepRow) -> int:
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
