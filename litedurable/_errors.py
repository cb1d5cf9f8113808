"""Every exception litedurable raises on its own account.

The tree is shallow on purpose; builtin mix-ins say what kind of mistake it is::

    DurableError
    ├── NonDeterminismError          replay met a different call than the journal holds
    ├── WorkflowConflictError        (ValueError) the id belongs to another workflow
    ├── WorkflowNotFoundError        (LookupError) no workflow with that id
    ├── ScheduleNotFoundError        (LookupError) no schedule with that name
    ├── WaitTimeoutError             (TimeoutError) a wait ran out of time
    ├── WorkflowCancelledError       the workflow was cancelled
    │   └── WorkflowTimedOutError    ... because its deadline passed
    ├── StepCancelledError           a step future was cancelled before it settled
    ├── WorkflowExhaustedError       the workflow hit its recovery limit
    ├── RecordedError                a recorded exception whose type is not loaded here
    ├── SerializationError           (TypeError) a value cannot be stored or read back
    ├── NotInWorkflowError           (RuntimeError) a workflow-only call made elsewhere
    ├── UsageError                   (TypeError) a decorator or API used the wrong way
    ├── InvalidIdError               (ValueError) a workflow id that cannot be stored
    ├── AppClosedError               (RuntimeError) the App is closed or not launched
    └── JournalError                 the journal file itself
        ├── JournalCorruptError      not a database, damaged, or a payload checksum differs
        ├── JournalVersionError      a foreign SQLite file, or written by a newer litedurable
        ├── JournalLockedError       another process held the lock past the busy timeout
        ├── JournalFullError         the disk (or max_page_count) is full
        ├── JournalReadOnlyError     the file or its directory cannot be written
        └── OwnershipLostError       another process took this workflow over

User exceptions are never wrapped: a step that raises ``KeyError`` raises ``KeyError`` in the
workflow, live and on replay. Every class here pickles (constructor takes the message, extra
fields are keyword-only and restored from ``__dict__``).

This module imports only the standard library.
"""

from __future__ import annotations

__all__ = [
    "AppClosedError",
    "DurableError",
    "EventNotSetError",
    "InvalidIdError",
    "JournalCorruptError",
    "JournalError",
    "JournalFullError",
    "JournalLockedError",
    "JournalReadOnlyError",
    "JournalVersionError",
    "NonDeterminismError",
    "NotInWorkflowError",
    "OwnershipLostError",
    "PromiseNotFoundError",
    "PromiseRejectedError",
    "QueueArgumentError",
    "QueueDeduplicatedError",
    "RecordedError",
    "ScheduleNotFoundError",
    "SerializationError",
    "StepCancelledError",
    "UsageError",
    "WaitTimeoutError",
    "WorkflowCancelledError",
    "WorkflowConflictError",
    "WorkflowExhaustedError",
    "WorkflowNotFoundError",
    "WorkflowTimedOutError",
]


class DurableError(Exception):
    """Root of every litedurable exception; catch this to catch them all."""


class NonDeterminismError(DurableError):
    """Replay reached a call that differs from what the journal recorded at that step.

    The workflow is parked in status ``nondeterministic``; recovery leaves it alone until the
    code is fixed and ``app.resume(id)`` (or a fork before the step) is called.
    """

    def __init__(
        self,
        message: str,
        *,
        workflow_id: str = "",
        step: int = -1,
        recorded: str = "",
        called: str = "",
    ) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id
        self.step = step
        self.recorded = recorded
        self.called = called


class WorkflowConflictError(DurableError, ValueError):
    """A workflow id is already taken by a workflow of another name."""


class QueueDeduplicatedError(WorkflowConflictError):
    """``q.enqueue(..., dedup_key=k)`` while a workflow enqueued with ``k`` on that queue is
    still enqueued or running; ``existing_id`` is that workflow's id. The key frees when it
    ends."""

    def __init__(self, message: str, existing_id: str | None = None) -> None:
        super().__init__(message)
        self.existing_id = existing_id


class WorkflowNotFoundError(DurableError, LookupError):
    """No workflow with this id exists in the journal."""


class EventNotSetError(DurableError, LookupError):
    """``app.get_event`` on a workflow that ended without setting that event."""


class PromiseNotFoundError(DurableError, LookupError):
    """No durable promise with this id exists in the journal."""


class PromiseRejectedError(DurableError):
    """The durable promise was rejected (``app.reject``); raised where the workflow takes it."""


class ScheduleNotFoundError(DurableError, LookupError):
    """No schedule with this name exists in the journal."""


class WaitTimeoutError(DurableError, TimeoutError):
    """A wait (``result``, ``select``) ran out of time before anything settled."""


class WorkflowCancelledError(DurableError):
    """The workflow was cancelled; raised inside it and to everyone waiting on it."""


class WorkflowTimedOutError(WorkflowCancelledError):
    """The workflow's deadline (``timeout=``) passed, so it was cancelled with its children.

    Not a ``TimeoutError``: ``except TimeoutError`` around ``Handle.result(timeout=...)`` means
    "the wait ran out", and must not also catch "the workflow was given up".
    """


class StepCancelledError(DurableError):
    """A step future was cancelled; this is its recorded outcome."""


class WorkflowExhaustedError(DurableError):
    """The workflow was recovered too many times without progress and was given up on."""


class RecordedError(DurableError):
    """A recorded exception whose class is not loaded in this process.

    litedurable never imports a module because the journal names it (opening a file must not
    run code from it), so the original type is rebuilt only when its module is already
    imported. Otherwise this stands in, carrying the type name, message and traceback text.
    """

    def __init__(self, message: str, *, type_name: str = "", traceback: str = "") -> None:
        super().__init__(message)
        self.type_name = type_name
        self.traceback = traceback


class SerializationError(DurableError, TypeError):
    """A value cannot be serialized to the journal, or read back as its declared type."""


class NotInWorkflowError(DurableError, RuntimeError):
    """A call that only makes sense inside a workflow was made somewhere else."""


class UsageError(DurableError, TypeError):
    """A decorator or API was used the wrong way (the message says the right way)."""


class QueueArgumentError(UsageError, ValueError):
    """A queue declared or enqueued on with an argument that cannot work (a limit below 1, a
    partition key missing on a partitioned queue, ...). Both a ``UsageError`` and a
    ``ValueError``: callers check for either, as they would for any bad argument."""


class InvalidIdError(DurableError, ValueError):
    """A workflow id that is not a non-empty, storable string."""


class AppClosedError(DurableError, RuntimeError):
    """The App is not launched, or is already closed."""


class JournalError(DurableError):
    """The journal file cannot be used as asked; nothing committed before was lost."""


class JournalCorruptError(JournalError):
    """The file is not a database, is damaged, or a stored payload fails its checksum."""


class JournalVersionError(JournalError):
    """The file is another program's SQLite database, or was written by a newer litedurable."""


class JournalLockedError(JournalError):
    """Another connection held the write lock longer than the busy timeout."""


class JournalFullError(JournalError):
    """The disk, or the database's page limit, is full."""


class JournalReadOnlyError(JournalError):
    """The journal was opened read-only, its file or directory cannot be written, or the file
    was deleted or replaced while open (writes after that cannot reach the file at the path)."""


class OwnershipLostError(JournalError):
    """Another process took this workflow over (this one was presumed dead); write refused."""


def passes(exc: BaseException) -> bool:
    """Whether ``exc`` is a journal error that may pass by itself (a database server away or
    restarting, a lock held too long, a full disk), so waiting and trying again makes sense;
    not a damaged, read-only or newer journal, nor a workflow another process took over."""
    return type(exc) in (JournalError, JournalLockedError, JournalFullError)
