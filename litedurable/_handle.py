"""Handles: a workflow by id, to wait for its result, read its status, or cancel it.

Outside a workflow a handle reads the journal and waits for an outcome (committed here, or by
another process: the runtime's commit watcher wakes it). Inside a workflow the same calls are
journaled (a wait step, a cancel step), and a child's handle is a future as well.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._children import WorkflowFuture, await_workflow, cancel_workflow
from ._concurrency import Future
from ._context import current
from ._errors import (
    JournalError,
    JournalReadOnlyError,
    UsageError,
    WaitTimeoutError,
    passes,
)
from ._run import WorkflowRun
from ._steps import StepScope
from ._types import Status, to_seconds

if TYPE_CHECKING:
    from ._app import App
    from ._storage import WorkflowRow

__all__ = ["ChildHandle", "Handle"]

log = logging.getLogger("litedurable")

R = TypeVar("R")


class Handle(Generic[R]):
    """A workflow by id: wait for its result, read its status, cancel it."""

    def __init__(self, app: App, workflow_id: str) -> None:
        self._app = app
        self.workflow_id = workflow_id

    def __repr__(self) -> str:
        return f"Handle({self.workflow_id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Handle) and other.workflow_id == self.workflow_id

    def __hash__(self) -> int:
        return hash(self.workflow_id)

    def status(self) -> Status:
        """The workflow's current status, read from the journal (inside a workflow: a snapshot,
        not recorded; do not branch on it)."""
        return Status(self._app._row(self.workflow_id).status)

    def result(self, timeout: float | timedelta | None = None) -> R:
        """Wait for the workflow's outcome; return its value or raise its exception.

        A failed workflow raises its original exception (rebuilt when its class is loaded);
        cancelled raises ``WorkflowCancelledError`` (``WorkflowTimedOutError`` past its
        deadline); parked workflows raise ``NonDeterminismError`` or
        ``WorkflowExhaustedError``. The workflow may run in another process on the same file:
        its commit is noticed within a few milliseconds.

        Inside a workflow the wait is durable: a recorded ``wait`` step that copies the outcome
        into this workflow's journal (parked workflows are waited for until resumed).

        Once the workflow was read, a journal that stops answering (a database server
        restarting) is waited through: the wait goes on, and at ``timeout`` raises what the
        journal said.

        Raises:
            WaitTimeoutError: ``timeout`` seconds passed first (the workflow keeps running).
            JournalError: the journal could not be read at first, or at ``timeout``.
        """
        scope = current()
        if isinstance(scope, WorkflowRun):
            return self._await_in(scope, timeout)
        if isinstance(scope, StepScope) and scope.workflow_id == self.workflow_id:
            raise UsageError(
                f"step {scope.step} of workflow {self.workflow_id!r} waits for the result of its "
                "own workflow, which cannot finish before the step does (a deadlock). Return "
                "the value from the step and use it in the workflow instead."
            )
        app = self._app
        limit = None if timeout is None else time.monotonic() + to_seconds(timeout, "timeout")
        _, runtime = app._parts()
        outcome = runtime.expect_outcome(self.workflow_id)
        away: JournalError | None = None  # why the journal failed the last read, if it did
        try:
            # A journal that fails this first read is an error at once.
            row: WorkflowRow | None = app._row(self.workflow_id)
            while True:
                if row is not None:
                    if Status(row.status).is_terminal:
                        value: R = app._outcome(row)
                        return value
                    storage, _ = app._parts()
                    if storage.gone is not None:  # no outcome can be recorded any more: say why
                        raise JournalReadOnlyError(storage.gone)
                remaining = None if limit is None else limit - time.monotonic()
                if remaining is not None and remaining <= 0:
                    if away is not None:
                        raise away
                    assert row is not None
                    goes_on = ("it stays in its queue until a consumer of that queue takes it"
                               if row.status == "enqueued" else "it keeps running")
                    raise WaitTimeoutError(
                        f"workflow {self.workflow_id!r} is still {row.status} after {timeout} s; "
                        f"{goes_on}. Call result() again to keep waiting."
                    )
                # Set by its outcome here or by the commit watcher; the cap is a safety net.
                outcome.wait(1.0 if remaining is None else min(remaining, 1.0))
                outcome.clear()  # before the read: an outcome committed after it sets it again
                try:
                    row, away = app._row(self.workflow_id), None
                except JournalError as exc:  # a server restarting: the wait goes on
                    if not passes(exc):  # damaged, read-only, newer: no use waiting
                        raise
                    if away is None:
                        log.warning("litedurable: waiting for workflow %r, still: %s",
                                    self.workflow_id, exc)
                    row, away = None, exc
        finally:
            runtime.forget_outcome(self.workflow_id, outcome)

    def _await_in(self, run: WorkflowRun, timeout: float | timedelta | None) -> R:
        self._app._check_runtime(run, f"waits on workflow {self.workflow_id!r}")
        if timeout is not None:
            raise UsageError(
                f"Handle.result(timeout=...) inside workflow {run.workflow_id!r}: only the "
                "handle app.start() returned for a child can be waited on with a timeout (it is "
                "a future: ld.select([child, ld.after(t)]) works too)"
            )
        storage = self._app._storage
        found = storage.get_workflow(self.workflow_id) if storage is not None else None
        value: R = await_workflow(run, self.workflow_id, self._app._hint(found)).get()
        return value

    def cancel(self) -> bool:
        """Cancel the workflow and its non-detached children (see ``App.cancel``).

        Returns True if the workflow was pending and is now cancelled. Inside a workflow this
        is a recorded step (replay does not cancel again).
        """
        scope = current()
        if isinstance(scope, WorkflowRun):
            self._app._check_runtime(scope, f"cancels workflow {self.workflow_id!r}")
            return cancel_workflow(scope, self.workflow_id)
        return self._app.cancel(self.workflow_id)


class ChildHandle(WorkflowFuture[R], Handle[R]):
    """The handle ``app.start`` returns inside a workflow: a ``Handle`` and a ``Future``.

    ``result()`` in the parent is a durable wait (a recorded ``wait`` step); the handle can be
    raced in ``ld.select`` / ``ld.as_completed`` against step futures and timers, where it
    stands for the step that started the child.
    """

    def __init__(self, app: App, run: WorkflowRun, step: int, child_id: str, hint: Any) -> None:
        WorkflowFuture.__init__(self, run, step, child_id, hint)
        Handle.__init__(self, app, child_id)

    def __repr__(self) -> str:
        return f"ChildHandle({self.workflow_id!r}, step={self.step})"

    def result(self, timeout: float | timedelta | None = None) -> R:
        if current() is self._run:
            return Future.result(self, timeout)
        return Handle.result(self, timeout)

    def cancel(self) -> bool:
        return Handle.cancel(self)  # recorded inside the parent, plain outside
