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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from ._errors import DurableError

__all__ = [
    "Durability",
    "OwnerRow",
    "ParentNotPending",
    "ScheduleRow",
    "StepRow",
    "Storage",
    "WorkflowRow",
    "checksum",
    "step_checksum",
    "workflow_checksum",
]

Durability = Literal["full", "normal"]


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
        parent_id: str | None, owner: str, deadline: float | None = None,
        detached: bool = False,
    ) -> tuple[bool, WorkflowRow]:
        """Create a pending workflow owned by ``owner`` unless the id exists: (created, row).

        Raises ``ParentNotPending`` (writing nothing) if ``parent_id`` names a workflow that is
        not pending."""
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
        app_version: str | None = None, limit: int | None = None, offset: int = 0,
    ) -> list[WorkflowRow]: ...

    def pending_by_version(self) -> dict[str, int]: ...

    def pending(self, app_version: str | None) -> list[tuple[str, str, str | None]]:
        """(workflow_id, name, owner) of each pending workflow (of ``app_version``), oldest
        first."""
        ...

    def statuses(self, workflow_ids: Iterable[str]) -> dict[str, str]: ...

    def changed_elsewhere(self) -> bool:
        """True if another process (or App) committed since the last call: cheap, polled."""
        ...

    # -- ownership ------------------------------------------------------------------------

    def heartbeat(self, row: OwnerRow) -> None:
        """Create ``row.owner``'s lease row, or refresh its heartbeat."""
        ...

    def owners(self) -> dict[str, OwnerRow]: ...

    def claim(self, claims: Iterable[tuple[str, str | None]], owner: str, *,
              forget: Sequence[str] = ()) -> dict[str, int]:
        """Compare-and-swap each (workflow id, expected owner) to ``owner``; attempt counts."""
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
