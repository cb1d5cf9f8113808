"""Workflows acting on other workflows: start a child, wait for one, cancel one.

Each is a journaled call of the acting workflow (``WorkflowRun.journaled``):

* a **child** start records the child's id, so replay hands back the same child, started once;
* a **wait** copies the other workflow's outcome into this workflow's journal, so replay
  returns it even after the other workflow was resumed, forked or garbage-collected;
* a **cancel** records whether it cancelled anything, so replay cancels nothing again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ._concurrency import Future, wait_point, wait_until
from ._errors import (
    QueueDeduplicatedError,
    UsageError,
    WorkflowCancelledError,
    WorkflowNotFoundError,
)
from ._registry import WorkflowDef
from ._run import WorkflowRun
from ._runtime import SETTLED
from ._steps import Outcome
from ._storage import StepRow, WorkflowRow
from ._types import StepKind

__all__ = ["WorkflowFuture", "await_workflow", "cancel_workflow", "start_child"]

T = TypeVar("T")


class WorkflowFuture(Future[T]):
    """Another workflow's outcome (a child's, usually), as a future of this workflow.

    It settles when the other workflow succeeds, fails or is cancelled (parked workflows are
    not settled: they wait to be resumed). ``step`` is the step that started the child, so
    ``select`` can race it with step futures and timers. Taking its outcome is a recorded
    ``wait`` step.
    """

    __slots__ = ("_hint", "_taken", "_terminal", "target")

    def __init__(self, run: WorkflowRun, step: int, target: str, hint: Any) -> None:
        super().__init__(run, step)
        self.target = target
        self._hint = hint
        self._terminal = False
        self._taken: Outcome | None = None
        # Registered first, read second: an outcome after the read is announced to the run
        # (``WorkflowRun.finished``), one before it is in the row. The wait then only reads
        # memory: it runs holding ``run.cond``, which a storage read must never be held under
        # (a slow read would block every step thread that notifies the run).
        run.runtime.wake_on_outcome(run.workflow_id, target)
        row = run.runtime.storage.get_workflow(target)
        self._terminal = row is None or row.status in SETTLED

    def _settled(self) -> bool:
        return self._terminal or self.target in self._run.finished

    def _outcome(self) -> Outcome:
        if self._taken is None:
            self._taken = await_workflow(self._run, self.target, self._hint, self)
        return self._taken

    def cancel(self) -> bool:
        """Cancel the other workflow (and its non-detached children); True if it was pending.

        A recorded ``cancel`` step: replay returns the recorded answer and cancels nothing, so
        a workflow resumed meanwhile by someone else is left alone.
        """
        return cancel_workflow(self._check_run("Future.cancel"), self.target)


def start_child(
    run: WorkflowRun,
    definition: WorkflowDef,
    workflow_id: object,
    insert: Callable[[object], WorkflowRow],
    conflict: Callable[[WorkflowRow], Exception],
) -> tuple[int, str]:
    """Start a child workflow as a ``child`` step of ``run``: (step, child id).

    ``insert(child_id)`` checks the id, creates (or enqueues) the child, or finds the id taken,
    and returns its row; ``conflict(row)`` is the error for an id taken by a workflow of
    another name. That error, or the ``QueueDeduplicatedError`` of a queued child whose dedup
    key is held, is recorded as the step's outcome (replay raises it again) and raised.
    """
    if workflow_id is not None and workflow_id in (run.workflow_id, run.row.parent_id):
        whose = "its own" if workflow_id == run.workflow_id else "its parent's"
        raise UsageError(
            f"workflow {run.workflow_id!r} starts a {definition.name!r} child with {whose} "
            f"id {workflow_id!r}: the two would wait on each other forever. Give the child "
            "another workflow_id= (or none: the default is derived from the parent's)."
        )
    steps = run.runtime.steps

    def replay(step: int, row: StepRow) -> tuple[int, str, Exception | None]:
        return step, str(steps.replay(row, str).get()), None

    def live(step: int) -> tuple[int, str, Exception | None]:
        child_id = f"{run.workflow_id}/{step}" if workflow_id is None else workflow_id
        refused: Exception | None
        try:
            row = insert(child_id)
        except QueueDeduplicatedError as held:  # a decision about the world: recorded
            refused = held
        else:
            child_id = row.workflow_id
            refused = None if row.name == definition.name else conflict(row)
        steps.record(run.workflow_id, step, StepKind.CHILD, definition.name, child_id, str,
                     error=refused)
        return step, str(child_id), refused

    step, child_id, refused = run.journaled(StepKind.CHILD, definition.name, replay, live)
    if refused is not None:
        raise refused
    return step, child_id


def cancel_workflow(run: WorkflowRun, target: str) -> bool:
    """Cancel workflow ``target`` from inside a workflow, as a recorded ``cancel`` step."""
    runtime = run.runtime

    def live(step: int) -> bool:
        done = runtime.cancel(target, WorkflowCancelledError(
            f"workflow {target!r} was cancelled by workflow {run.workflow_id!r}"
        ))
        return bool(runtime.steps.record(run.workflow_id, step, StepKind.CANCEL, target,
                                         target in done, bool))

    return run.journaled(StepKind.CANCEL, target,
                         lambda _, row: bool(runtime.steps.replay(row, bool).get()), live)


def await_workflow(run: WorkflowRun, target: str, hint: Any,
                   future: WorkflowFuture[Any] | None = None) -> Outcome:
    """Wait durably for workflow ``target``'s outcome: a ``wait`` step that records it."""
    if target == run.workflow_id:
        raise UsageError(
            f"workflow {run.workflow_id!r} waits for its own result, which it can only have "
            "once it returns (a deadlock). Wait on other workflows (children) only."
        )
    runtime = run.runtime

    def live(step: int) -> Outcome:
        waited = future or WorkflowFuture(run, step, target, hint)
        with wait_point(run):
            wait_until(run, [waited], all_settled=True)
        found = runtime.storage.get_workflow(target)
        if found is None:
            raise WorkflowNotFoundError(
                f"workflow {run.workflow_id!r} waits for workflow {target!r}, which does not "
                "exist (it was never started, or was garbage-collected before it was awaited)"
            )
        return runtime.steps.record_copy(run.workflow_id, step, StepKind.WAIT, target,
                                         found.output, found.error, hint)

    return run.journaled(StepKind.WAIT, target,
                         lambda _, row: runtime.steps.replay(row, hint), live)
