"""litedurable: durable Python workflows in one SQLite file.

A workflow is plain Python; every step it takes and every nondeterministic choice it makes
(which branch won a ``select``, what ``now()`` said) is a row in a WAL-mode SQLite journal. Kill
the process at any instant; launch again and every workflow resumes from its last recorded
step, makes the same choices, and never re-runs a recorded step.

    import litedurable as ld

    app = ld.App("jobs.db")

    @app.step()
    def charge(order_id: str) -> str: ...

    @app.workflow()
    def checkout(order_id: str) -> str:
        return charge(order_id)

    with app:
        print(app.run(checkout, "order-42", workflow_id="order-42"))
"""

from contextlib import suppress as _suppress

from ._app import App
from ._clock import Clock, SystemClock
from ._concurrency import (
    Future,
    after,
    as_completed,
    cancelled,
    go,
    idempotency_key,
    is_replaying,
    logger,
    named,
    now,
    random,
    run,
    select,
    sleep,
    uuid4,
    wait_all,
    workflow_id,
)
from ._errors import (
    AppClosedError,
    DurableError,
    EventNotSetError,
    InvalidIdError,
    JournalCorruptError,
    JournalError,
    JournalFullError,
    JournalLockedError,
    JournalReadOnlyError,
    JournalVersionError,
    NonDeterminismError,
    NotInWorkflowError,
    OwnershipLostError,
    PromiseNotFoundError,
    PromiseRejectedError,
    QueueArgumentError,
    QueueDeduplicatedError,
    RecordedError,
    ScheduleNotFoundError,
    SerializationError,
    StepCancelledError,
    UsageError,
    WaitTimeoutError,
    WorkflowCancelledError,
    WorkflowConflictError,
    WorkflowExhaustedError,
    WorkflowNotFoundError,
    WorkflowTimedOutError,
)
from ._handle import ChildHandle, Handle
from ._messages import (
    Promise,
    close_stream,
    event,
    get_event,
    message,
    promise,
    recv,
    send,
    set_event,
    write_stream,
)
from ._queues import Queue
from ._scheduler import CATCH_UP_LIMIT
from ._types import QueueInfo, Retry, ScheduleInfo, Status, StepInfo, WorkflowInfo

__version__ = "0.1.0"

__all__ = [
    "CATCH_UP_LIMIT",
    "App",
    "AppClosedError",
    "ChildHandle",
    "Clock",
    "DurableError",
    "EventNotSetError",
    "Future",
    "Handle",
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
    "Promise",
    "PromiseNotFoundError",
    "PromiseRejectedError",
    "Queue",
    "QueueArgumentError",
    "QueueDeduplicatedError",
    "QueueInfo",
    "RecordedError",
    "Retry",
    "ScheduleInfo",
    "ScheduleNotFoundError",
    "SerializationError",
    "Status",
    "StepCancelledError",
    "StepInfo",
    "SystemClock",
    "UsageError",
    "WaitTimeoutError",
    "WorkflowCancelledError",
    "WorkflowConflictError",
    "WorkflowExhaustedError",
    "WorkflowInfo",
    "WorkflowNotFoundError",
    "WorkflowTimedOutError",
    "after",
    "as_completed",
    "cancelled",
    "close_stream",
    "event",
    "get_event",
    "go",
    "idempotency_key",
    "is_replaying",
    "logger",
    "message",
    "named",
    "now",
    "promise",
    "random",
    "recv",
    "run",
    "select",
    "send",
    "set_event",
    "sleep",
    "uuid4",
    "wait_all",
    "workflow_id",
    "write_stream",
]

# Public names report the public module (as trio does), so reprs and docs say `litedurable.X`.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("litedurable._"):
        with _suppress(AttributeError, TypeError):
            _obj.__module__ = __name__
del _name, _obj, _suppress
