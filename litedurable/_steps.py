"""Steps: running a step body (with retries), recording its outcome, and replaying it.

A step is the unit of durable work. Its body runs live once per workflow (at least once: a
crash between the body and its commit runs it again), and its outcome (a value, or the
exception it raised) is recorded as one journal row before the workflow sees it. Replay hands
back the recorded outcome, rebuilt exactly as a live run saw it, without running the body.

``Steps`` does that for one App; it knows nothing of workflow runs or threads: the run thread
calls it for inline steps, the step pool for ``go`` steps (see ``_runtime``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._clock import Clock
from ._codec import Codec, error_text
from ._context import Scope, enter, leave
from ._errors import AppClosedError, SerializationError, StepCancelledError, WorkflowCancelledError
from ._faults import Faults
from ._storage import StepRow, Storage
from ._telemetry import Tracer
from ._types import Retry

__all__ = ["Outcome", "StepScope", "StepTask", "Steps"]


@dataclass(slots=True)
class Outcome:
    """What a step (or workflow) produced: a value or an exception."""

    value: Any = None
    error: BaseException | None = None

    def get(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


_SCOPE_CONDS = threading.Lock()  # makes each StepScope's condition exactly once


class StepScope(Scope):
    """The context inside a step body: its key, and whether cancellation was requested.

    Two kinds of cancellation reach a step. ``Future.cancel()`` cancels the step itself: its
    recorded outcome becomes ``StepCancelledError``. The end of its workflow (cancelled, timed
    out, finished without it) *abandons* it: a value it still returns is recorded, anything
    else is not, so a resumed workflow runs the step again instead of replaying a failure.
    """

    __slots__ = ("_cond", "abandoned", "cancel_requested", "step")

    def __init__(self, workflow_id: str, step: int) -> None:
        self.workflow_id = workflow_id  # Scope's one field, set here: one per step, hot path
        self.step = step
        self.cancel_requested = False
        self.abandoned = False
        self._cond: threading.Condition | None = None

    @property
    def cond(self) -> threading.Condition:
        """Guards ``cancel_requested``; made on first use, as most steps never wait on it."""
        cond = self._cond
        if cond is None:
            with _SCOPE_CONDS:
                cond = self._cond
                if cond is None:
                    cond = self._cond = threading.Condition()
        return cond

    @property
    def key(self) -> str:
        return f"{self.workflow_id}:{self.step}"

    def request_cancel(self, *, abandon: bool = False) -> None:
        with self.cond:
            self.cancel_requested = True
            self.abandoned = self.abandoned or abandon
            self.cond.notify_all()


class StepTask:
    """One step execution: inline in the run thread, or on the step pool for ``go``.

    A ``go`` task is owned by the runtime (keyed by workflow id and step number) so a replay of
    its workflow attaches to it rather than running the body twice. ``broken`` holds an engine
    failure (journal error, lost ownership, simulated crash): such a task never settles and
    its workflow run is abandoned. ``successor``: the task of a later run of the workflow that
    waits for this abandoned one to end (see ``Runtime.start_task``).
    """

    __slots__ = (
        "args", "attempts", "broken", "fn", "hint", "kind", "kwargs", "name", "outcome",
        "retry", "scope", "site", "step", "successor", "workflow_id",
    )

    def __init__(
        self,
        workflow_id: str,
        step: int,
        kind: str,
        name: str,
        fn: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        retry: Retry | None,
        hint: Any,
    ) -> None:
        self.workflow_id = workflow_id
        self.step = step
        self.kind = kind
        self.name = name
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.retry = retry
        self.hint = hint
        self.scope = StepScope(workflow_id, step)
        self.outcome: Outcome | None = None
        self.broken: BaseException | None = None
        self.successor: StepTask | None = None
        self.attempts: list[tuple[float, float, str]] | None = None  # failed ones, if retried
        self.site: str | None = None  # where the workflow called it (``WorkflowRun.take``)

    @property
    def settled(self) -> bool:
        return self.outcome is not None


class Steps:
    """Executes, records and replays steps for one launched App (owner token ``owner``)."""

    def __init__(self, storage: Storage, codec: Codec, clock: Clock, owner: str,
                 faults: Faults, tracer: Tracer | None = None) -> None:
        self.storage = storage
        self.codec = codec
        self.clock = clock
        self.owner = owner
        self.faults = faults
        self.tracer = tracer  # App(tracing=...): a span per live step execution (``_telemetry``)
        self.closing = False  # set once when the App closes: retry delays end at once
        # The call site of each live journaled call in progress, by (workflow id, step): put
        # by ``WorkflowRun.take`` and dropped when the call returns (``journaled``), both in
        # the run thread; read by the rows recorded meanwhile. A ``go`` task, recorded later
        # on a step thread, carries its own (``StepTask.site``).
        self.sites: dict[tuple[str, int], str | None] = {}

    def execute(self, task: StepTask) -> Outcome:
        """Run a step body (with retries), record its outcome durably, return it as replay would."""
        tracer = self.tracer
        if tracer is None:  # tracing off: the one check it costs a step
            return self._execute(task)
        with tracer.step(task) as done:
            outcome = self._execute(task)
            done(outcome.error)
            return outcome

    def _execute(self, task: StepTask) -> Outcome:
        faults = self.faults if self.faults.callback is not None else None  # crash tests only
        info: dict[str, object] = {}
        if faults:
            info = {"workflow_id": task.workflow_id, "step": task.step, "name": task.name}
            faults.fire("before_step", **info)
            if faults.broken("record_before_body"):  # a negative control's broken engine
                return self._record_before_body(task, info)
        started = self.clock.now()
        outcome = self._invoke(task)
        if self.closing and isinstance(outcome.error, AppClosedError):
            # The body used its App, which closed under it: that is no outcome of the step's
            # (recorded, it would fail every replay); unrecorded, the next launch runs it again.
            raise AppClosedError(
                f"step {task.step} ({task.name}) of workflow {task.workflow_id!r} was cut short "
                "by its App closing; it is not recorded, so the next launch runs it again"
            ) from outcome.error
        if task.scope.abandoned and outcome.error is not None:
            raise WorkflowCancelledError(
                f"step {task.step} ({task.name}) of workflow {task.workflow_id!r} was abandoned "
                "when its workflow ended; it is not recorded, so a resume runs it again"
            )
        if faults:
            faults.fire("after_body", **info)
        outcome = self.record_outcome(task, outcome, started)
        if faults:
            faults.fire("after_commit", **info)
        return outcome

    def _record_before_body(self, task: StepTask, info: dict[str, object]) -> Outcome:
        """The ``record_before_body`` defect: the row (None) is committed, then the body runs."""
        outcome = self.record_outcome(task, Outcome(), self.clock.now())
        self.faults.fire("after_commit", **info)
        self._invoke(task)
        self.faults.fire("after_body", **info)
        return outcome

    def _invoke(self, task: StepTask) -> Outcome:
        """The body's outcome, retried as its ``Retry`` says; cancellation stops the retries."""
        scope = task.scope
        token = enter(scope)
        attempt = 1
        began = 0.0
        try:
            while True:
                if scope.cancel_requested:
                    return Outcome(error=_step_cancelled(task))
                if task.retry is not None:
                    began = self.clock.now()
                try:
                    return Outcome(value=task.fn(*task.args, **task.kwargs))
                except BaseException as exc:  # SystemExit too: it is the body's outcome
                    if scope.cancel_requested:
                        return Outcome(error=_step_cancelled(task))
                    if task.retry is None or not task.retry.should_retry(attempt, exc):
                        return Outcome(error=exc)
                    failed = (began, self.clock.now(), error_text(exc)[:500])  # never raises
                    task.attempts = [*(task.attempts or ()), failed]
                    wake = self.clock.now() + task.retry.delay(attempt)
                    with scope.cond:
                        while not scope.cancel_requested and not self.closing:
                            if self.clock.now() >= wake:
                                break
                            self.clock.wait(scope.cond, wake)
                    if self.closing:
                        raise AppClosedError("the App closed during a retry delay") from exc
                    attempt += 1
        finally:
            leave(token)

    def record_outcome(self, task: StepTask, outcome: Outcome, started: float) -> Outcome:
        """Write the step row; return the outcome exactly as a replay will see it."""
        what = f"the result of step {task.step} ({task.name}) of workflow {task.workflow_id!r}"
        output = error = None
        value: Any = None
        if outcome.error is None:
            try:
                output = self.codec.encode(outcome.value, what)
                # Read back before writing: a value that would not come back as itself fails
                # now, recorded as the step's error, instead of differently on replay.
                value = self.codec.replayed(outcome.value, output, task.hint, what)
            except SerializationError as exc:
                output, outcome = None, Outcome(error=exc)
        if outcome.error is not None:
            error = self.codec.encode_error(outcome.error)
        row = StepRow(task.workflow_id, task.step, task.kind, task.name, output, error, None,
                      started, self.clock.now(),
                      task.site,
                      None if task.attempts is None else json.dumps(task.attempts))
        self.storage.record_step(row, self.owner)
        # Hand back what replay will hand back, so both runs agree: the value as decoded, the
        # exception as rebuilt from its record (its class, args and attributes as stored).
        if output is not None:
            outcome.value = value  # the body's own Outcome, reused: one object less per step
            return outcome
        assert error is not None
        return Outcome(error=self.codec.decode_error(error))

    def record(self, workflow_id: str, step: int, kind: str, name: str, value: Any,
               hint: Any, *, extra: bytes | None = None, open_row: bool = False,
               error: BaseException | None = None) -> Any:
        """Record a value the engine produced (a time, an id, a decision) as step ``step``.

        ``open_row`` writes a row that a later ``record`` of the same step completes (a select
        with a timeout records its deadline first, its decision later). With ``error`` the
        row records that exception instead of ``value`` (and None is returned).
        """
        now = self.clock.now()
        what = f"{kind} at step {step} of workflow {workflow_id!r}"
        output = None if error is not None else self.codec.encode(value, what)
        failure = None if error is None else self.codec.encode_error(error)
        finished = None if open_row else now
        self.storage.record_step(
            StepRow(workflow_id, step, kind, name, output, failure, extra, now, finished,
                    self.sites.get((workflow_id, step))),
            self.owner,
        )
        return None if output is None else self.codec.replayed(value, output, hint, what)

    def record_copy(self, workflow_id: str, step: int, kind: str, name: str,
                    output: bytes | None, error: bytes | None, hint: Any) -> Outcome:
        """Record an outcome already encoded (another workflow's, copied); return it rebuilt."""
        now = self.clock.now()
        row = StepRow(workflow_id, step, kind, name, output, error, None, now, now,
                      self.sites.get((workflow_id, step)))
        self.storage.record_step(row, self.owner)
        return self.replay(row, hint)

    def replay(self, row: StepRow, hint: Any) -> Outcome:
        """The recorded outcome of a step row, rebuilt."""
        if row.error is not None:
            return Outcome(error=self.codec.decode_error(row.error))
        assert row.output is not None
        what = f"the recorded result of step {row.step} ({row.name}) of {row.workflow_id!r}"
        try:
            return Outcome(value=self.codec.decode(row.output, hint, what))
        except SerializationError as exc:
            # An outcome, not a raise: it surfaces where the value is taken (``f.result()``
            # for a ``go`` step), the same call that fails on a first run.
            return Outcome(error=exc)


def _step_cancelled(task: StepTask) -> StepCancelledError:
    return StepCancelledError(
        f"step {task.step} ({task.name}) of workflow {task.workflow_id!r} was cancelled"
    )
