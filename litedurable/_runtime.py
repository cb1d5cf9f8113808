"""Run a workflow: number its steps, replay or execute each one, record the outcome.

Three kinds of thread touch a workflow:

* its **run thread** (from the App's run pool) executes the workflow function and every inline
  step. Step numbers are taken here, in program order, at call time;
* **step threads** (the step pool, ``workers``) execute bodies started with ``go``;
* the **timer thread** wakes suspended workflows when a durable deadline passes.

A run that must wait longer than ``suspend_after`` seconds (or sleeps past it) *unwinds*: it
raises ``_Unwind`` through the workflow function, gives its thread back, and is driven again
from the start when something it waits for happens. Replay is cheap (recorded steps return
their journaled outcome without running), so thousands of waiting workflows need no threads.
Steps started by ``go`` belong to the runtime, not to the run, so they keep running across an
unwind and the replayed ``go`` attaches to them instead of starting them again.

Every write goes through the journal's group commit and is fenced on this runtime's owner
token. Named crash points (``Hooks``) let tests stop the engine at exact places.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._clock import Clock, to_datetime
from ._codec import Codec
from ._context import Scope, current, enter, leave
from ._errors import (
    AppClosedError,
    JournalError,
    NonDeterminismError,
    NotInWorkflowError,
    SerializationError,
    StepCancelledError,
    UsageError,
    WorkflowCancelledError,
    WorkflowTimedOutError,
)
from ._journal import Journal, StepRow, WorkflowRow
from ._pool import WorkerPool
from ._registry import Registry, WorkflowDef
from ._types import Retry, Status

WATCH_INTERVAL = 0.005
"""Seconds between two looks for commits made by other processes (``PRAGMA data_version``)
while something here could care: a ``Handle.result`` waiter, or a workflow running here.

This bounds the cross-process wake-up latency of ``Handle.result`` and of cancellation; a look
costs microseconds and no file I/O."""
IDLE_WATCH_INTERVAL = 0.1
"""The same while nothing here waits or runs, so an idle App costs next to no CPU."""

__all__ = [
    "CRASH_POINTS",
    "Hooks",
    "Outcome",
    "Runtime",
    "StepScope",
    "StepTask",
    "WorkflowRun",
    "cancel_tree",
    "current_run",
    "current_step",
]

log = logging.getLogger("litedurable")

CRASH_POINTS: tuple[str, ...] = (
    "before_step",  # a step's number is taken, its body has not started
    "after_body",  # the body returned or raised; its row is not written
    "after_commit",  # the step row is durable; the caller has not seen the value
    "before_decision",  # a select chose its winner; the decision is not written
    "after_decision",  # the decision is durable; code after the select has not run
    "before_outcome",  # the workflow function returned; its outcome is not written
    "after_outcome",  # the workflow's outcome is durable
    "recovery",  # launch() claimed pending workflows and is about to resume them
)


class Hooks:
    """Named crash points; a test installs ``callback(point, info)`` to raise at one.

    The callback may raise any ``BaseException``; the engine lets it through untouched, and
    ``crashed`` remembers it: from then on the App counts as dead, so a workflow function that
    the exception unwinds is not recorded as failed by it (what a real crash would leave).
    """

    def __init__(self) -> None:
        self.callback: Callable[[str, Mapping[str, object]], None] | None = None
        self.crashed: BaseException | None = None

    def fire(self, point: str, **info: object) -> None:
        callback = self.callback
        if callback is not None:
            try:
                callback(point, info)
            except BaseException as exc:
                self.crashed = exc
                raise


class _Unwind(BaseException):
    """Leave the workflow function without recording anything (suspend or shutdown).

    A ``BaseException`` so ``except Exception`` in user code lets it pass.
    """


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
        "args", "broken", "fn", "hint", "kind", "kwargs", "name", "outcome", "retry", "scope",
        "step", "successor", "workflow_id",
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

    @property
    def settled(self) -> bool:
        return self.outcome is not None


class _Slot:
    """What the runtime knows about a workflow it owns and has not finished."""

    __slots__ = ("again", "deadline_armed", "reached", "row", "run", "state", "tasks", "watching")

    def __init__(self, row: WorkflowRow | None) -> None:
        self.state = "queued"  # queued | running | suspended
        self.row = row  # set when freshly created: no need to read it back
        self.run: WorkflowRun | None = None
        self.tasks: dict[int, StepTask] = {}
        self.watching: set[str] = set()  # workflows whose outcome this one waits for
        self.deadline_armed = False  # a timer for the workflow's deadline is set
        self.again = False  # scheduled while running: drive once more after this run
        # The furthest (next step, waits passed) an earlier run here got to (ld.is_replaying).
        self.reached = (-1, 0)


class WorkflowRun(Scope):
    """One execution of a workflow function in its run thread (there may be many over time).

    Holds the recorded journal loaded in one query, the next step number, and ``fatal``: the
    first engine-level reason to stop (unwind, cancellation, non-determinism, lost journal).
    Once set, every later journaled call raises it again, so user code that catches it cannot
    carry on as if nothing happened.
    """

    __slots__ = (
        "cond", "definition", "ended", "fatal", "inline", "next_step", "recorded", "replay_only",
        "replay_until", "resumed_from", "row", "runtime", "steps_ready", "thread", "waits",
        "wake_deadline", "wake_ready",
    )

    def __init__(
        self, runtime: Runtime, definition: WorkflowDef, row: WorkflowRow, steps: list[StepRow]
    ) -> None:
        super().__init__(row.workflow_id)
        self.runtime = runtime
        self.definition = definition
        self.row = row
        self.recorded = {s.step: s for s in steps}
        self.next_step = 0
        # Code before the last recorded step, or at or before the (step, waits) position a
        # suspended run of this process reached, already ran once: ld.is_replaying() is True.
        self.replay_until = max(self.recorded, default=-1) + 1
        self.resumed_from = (-1, 0)
        self.waits = 0  # blocking calls passed, counted by litedurable._concurrency
        self.thread = threading.get_ident()
        self.cond = threading.Condition()
        self.fatal: BaseException | None = None
        self.wake_ready: Callable[[], bool] | None = None
        self.wake_deadline: float | None = None
        self.replay_only = False  # offline replay: stop where the journal ends
        self.ended = False  # the workflow reached a terminal status during this run
        self.inline: StepTask | None = None  # the inline step running now (for cancellation)
        self.steps_ready: Callable[[], bool] | None = None  # the filter of the wait in progress

    # -- numbering and replay -------------------------------------------------------------

    def take(self, kind: str, name: str) -> tuple[int, StepRow | None]:
        """Take the next step number; return it with its recorded row, checking kind and name."""
        if threading.get_ident() != self.thread:
            raise UsageError(
                f"a {kind} call for workflow {self.workflow_id!r} came from a thread that is not "
                "the workflow's own. Journaled calls (steps, go, select, sleep, now, ...) must "
                "be made from the workflow function's thread, in program order."
            )
        self.check_interrupts()
        step = self.next_step
        self.next_step += 1
        row = self.recorded.get(step)
        if row is None and self.replay_only:
            self.fatal = _Unwind("offline replay reached the end of the journal")
            raise self.fatal
        if row is not None and (row.kind != kind or row.name != name):
            error = NonDeterminismError(
                f"workflow {self.workflow_id!r} ({self.definition.name}) is not deterministic: "
                f"step {step} was recorded as {row.kind} {row.name!r} but the code now calls "
                f"{kind} {name!r}. The workflow is parked in status 'nondeterministic'. Restore "
                "the code that started it, or fork it from before step "
                f"{step} (app.fork(id, from_step={step})).",
                workflow_id=self.workflow_id,
                step=step,
                recorded=f"{row.kind} {row.name}",
                called=f"{kind} {name}",
            )
            self.fatal = error
            raise error
        return step, row

    def check_interrupts(self) -> None:
        """Raise the reason this run must stop, if there is one."""
        if self.fatal is not None:
            raise self.fatal
        runtime = self.runtime
        if runtime.closing:
            self.fatal = _Unwind("the App is closing; the workflow stays pending")
            raise self.fatal
        reason = runtime.cancelled.get(self.workflow_id)
        if reason is not None:
            self.fatal = reason
            raise self.fatal

    def guard(self, exc: BaseException) -> BaseException:
        """Remember an engine failure raised inside the run so it cannot be swallowed."""
        if isinstance(exc, JournalError | _Unwind | WorkflowCancelledError) and self.fatal is None:
            self.fatal = exc
        return exc

    # -- steps ----------------------------------------------------------------------------

    def call_step(
        self,
        kind: str,
        name: str,
        fn: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        retry: Retry | None,
        hint: Any,
    ) -> Any:
        """An inline step: replay its recorded outcome, or run the body here and record it."""
        step, row = self.take(kind, name)
        if row is not None:
            return self.runtime.replay(row, hint).get()
        task = StepTask(self.workflow_id, step, kind, name, fn, args, kwargs, retry, hint)
        self.inline = task
        if self.workflow_id in self.runtime.cancelled:  # cancelled since take(): tell the body
            task.scope.request_cancel(abandon=True)
        try:
            outcome = self.runtime.execute(task)
        except BaseException as exc:
            raise self.guard(exc) from None
        finally:
            self.inline = None
        return outcome.get()

    def record_value(self, kind: str, value: Callable[[], Any], hint: Any) -> Any:
        """A recorded nondeterministic value (``now``, ``uuid4``, ``random``)."""
        step, row = self.take(kind, kind)
        if row is not None:
            return self.runtime.replay(row, hint).get()
        try:
            return self.runtime.record(self, step, kind, kind, value(), hint)
        except BaseException as exc:
            raise self.guard(exc) from None

    # -- waiting --------------------------------------------------------------------------

    def wait(self, ready: Callable[[], bool], deadline: float | None, *, timer_only: bool,
             steps_ready: Callable[[], bool] | None = None) -> bool:
        """Block until ``ready()`` or the clock reaches ``deadline``; True if ready.

        Unwinds (suspends the workflow, freeing this thread) when the wait outlasts
        ``suspend_after``; a pure timer wait that long unwinds at once.

        Args:
            steps_ready: a cheap check, safe to call from any thread holding ``cond``, that
                must hold whenever ``ready()`` does as far as ``go`` steps are concerned (for
                ``wait_all``: every step waited on has settled). A finishing step wakes this
                run only if it holds, so ``wait_all`` over 100 steps wakes once, not 100
                times, each wake-up a GIL hand-off the finishing steps also wait for. Other
                wake-ups (cancellation, close, timers, other workflows) are not filtered.
        """
        runtime = self.runtime
        clock = runtime.clock
        hold_until = time.monotonic() + runtime.suspend_after
        with self.cond:
            self.steps_ready = steps_ready
            try:
                while True:
                    self.check_interrupts()
                    if ready():
                        return True
                    now = clock.now()
                    if deadline is not None and now >= deadline:
                        return False
                    if self.replay_only:
                        self.fatal = _Unwind(
                            "offline replay reached a wait the journal did not finish"
                        )
                        raise self.fatal
                    long_timer = (
                        timer_only and deadline is not None
                        and deadline - now > runtime.suspend_after
                    )
                    if long_timer or time.monotonic() >= hold_until:
                        self.wake_ready, self.wake_deadline = ready, deadline
                        self.fatal = _Unwind("suspended")
                        raise self.fatal
                    until = now + max(0.0, hold_until - time.monotonic())
                    clock.wait(self.cond, until if deadline is None else min(until, deadline))
            finally:
                self.steps_ready = None

    def notify(self, *, step_settled: bool = False) -> None:
        """Wake the run's wait; for a settled ``go`` step, only if the wait's filter allows.

        The filter is checked under ``cond`` after the step's outcome was set, and the wait
        checks ``ready()`` under ``cond`` before sleeping, so no wake-up is lost: either the
        wait saw the outcome, or it is asleep now and the filter sees it.
        """
        with self.cond:
            check = self.steps_ready
            if not step_settled or check is None or check():
                self.cond.notify_all()


def current_run(call: str) -> WorkflowRun:
    """The workflow run of the calling code, or a ``NotInWorkflowError`` naming ``call``."""
    scope = current()
    if isinstance(scope, WorkflowRun):
        return scope
    if isinstance(scope, StepScope):
        raise UsageError(
            f"ld.{call}() was called inside step {scope.step} of workflow {scope.workflow_id!r}. "
            f"Steps are leaves: call ld.{call}() from the workflow function itself."
        )
    raise NotInWorkflowError(
        f"ld.{call}() can only be called inside a workflow function (decorated with "
        "@app.workflow() and started with app.start() or app.run())."
    )


def current_step() -> StepScope | None:
    """The step body being executed by the calling code, if any."""
    scope = current()
    return scope if isinstance(scope, StepScope) else None


class Runtime:
    """Owns the threads, the in-flight steps and the workflow slots of one launched App.

    Args:
        journal, codec, clock, registry: the App's collaborators.
        owner: this App's owner token (fences every write).
        app_version: recorded on each workflow this runtime starts.
        workers: step pool size (threads running ``go`` bodies).
        workflow_threads: run pool size (threads running workflow functions).
        suspend_after: seconds a run may block in a wait before it unwinds.
    """

    def __init__(
        self,
        *,
        journal: Journal,
        codec: Codec,
        clock: Clock,
        registry: Registry,
        owner: str,
        app_version: str,
        workers: int,
        workflow_threads: int,
        suspend_after: float,
        hooks: Hooks,
    ) -> None:
        self.journal = journal
        self.codec = codec
        self.clock = clock
        self.registry = registry
        self.owner = owner
        self.app_version = app_version
        self.hooks = hooks
        self.suspend_after = suspend_after
        self.closing = False
        self.cancelled: dict[str, WorkflowCancelledError] = {}  # delivered, by workflow id
        self._active = 0  # slots queued or running (not suspended): the watcher's pace
        self.step_pool = WorkerPool(workers, "litedurable-step")
        self.run_pool = WorkerPool(workflow_threads, "litedurable-workflow")
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        # ``go`` tasks of ended runs whose bodies still run (they ignore cancellation), by
        # workflow id and step, kept past their slot so a later resume waits for them instead
        # of running the same body beside them (see ``start_task``).
        self._abandoned: dict[str, dict[int, StepTask]] = {}
        self._result_events: dict[str, list[threading.Event]] = {}  # Handle.result waiters
        self._waiters: dict[str, set[str]] = {}  # workflow id -> ids of slots waiting on it
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()
        self._timer_cond = threading.Condition()
        self._timer_thread = threading.Thread(
            target=self._timer_loop, name="litedurable-timer", daemon=True
        )
        self._timer_thread.start()
        self._watch_wake = threading.Event()  # set to look now (or to stop, when closing)
        self._watch_thread = threading.Thread(
            target=self._watch_loop, name="litedurable-watch", daemon=True
        )
        self._watch_thread.start()

    # -- scheduling -----------------------------------------------------------------------

    def schedule(self, workflow_id: str, row: WorkflowRow | None = None) -> None:
        """Make sure the workflow is (or will be) driven by a run thread."""
        with self._lock:
            if self.closing:
                return
            slot = self._slots.get(workflow_id)
            if slot is None:
                slot = self._slots[workflow_id] = _Slot(row)
                slot.tasks.update(self._abandoned.pop(workflow_id, ()))
            elif slot.state == "running":
                slot.again = True  # e.g. resumed while its cancelled run unwinds
                return
            elif slot.state == "queued":
                return
            slot.state = "queued"
            self._active += 1
            if self._active == 1:
                self._watch_wake.set()  # from the idle pace to the fast one
        self.run_pool.submit(lambda: self._drive(workflow_id))

    def notify(self, workflow_id: str, *, step_settled: bool = False) -> None:
        """Something a workflow may wait for happened: wake its run, or resume it.

        ``step_settled``: it was one of its ``go`` steps settling (see ``WorkflowRun.notify``).
        """
        with self._lock:
            slot = self._slots.get(workflow_id)
            run = slot.run if slot is not None else None
            suspended = slot is not None and slot.state == "suspended"
        if run is not None:
            run.notify(step_settled=step_settled)
        elif suspended:
            self.schedule(workflow_id)

    def is_active(self, workflow_id: str) -> bool:
        with self._lock:
            return workflow_id in self._slots

    def _drive(self, workflow_id: str) -> None:
        with self._lock:
            slot = self._slots[workflow_id]
            slot.state = "running"
            row, slot.row = slot.row, None
        run: WorkflowRun | None = None
        try:
            # A freshly started workflow has its row and no steps; any other is read back,
            # row and steps in one read.
            steps: list[StepRow] = []
            if row is None:
                row, steps = self.journal.load_workflow(workflow_id)
            if row is None or row.status != Status.PENDING or row.owner != self.owner:
                return
            if row.deadline is not None and not self._arm_deadline(slot, row):
                return
            definition = self.registry.workflows.get(row.name)
            if definition is None:
                log.error(
                    "litedurable: workflow %r is a %r, which this App does not register; it "
                    "stays pending for an App that does", workflow_id, row.name)
                return
            run = WorkflowRun(self, definition, row, steps)
            with self._lock:
                slot.run = run
                run.resumed_from = slot.reached
            self._run(run)
        except BaseException as exc:
            if self.journal_frozen or self.hooks.crashed is not None:
                return
            if isinstance(exc, JournalError | AppClosedError):
                log.warning("litedurable: workflow %r stopped: %s", workflow_id, exc)
            else:
                log.exception("litedurable: workflow %r stopped unexpectedly", workflow_id)
        finally:
            self._after_drive(workflow_id, slot, run)

    def _after_drive(self, workflow_id: str, slot: _Slot, run: WorkflowRun | None) -> None:
        suspended = (
            run is not None and isinstance(run.fatal, _Unwind) and run.wake_ready is not None
            and not self.closing
        )
        again = False
        with self._lock:
            slot.run = None
            if run is not None and run.ended:
                # Futures still running when their workflow ended are cancelled cooperatively,
                # and marked abandoned before a resumed run (``again``) can look at them. Not
                # on close or a lost journal: the workflow is still pending and its steps are
                # not cancelled, only interrupted (queued ones are dropped, unrecorded).
                for task in slot.tasks.values():
                    if task.outcome is None and task.broken is None:
                        task.scope.request_cancel(abandon=True)
            if run is not None:
                slot.reached = max(slot.reached, (run.next_step, run.waits))
            if suspended:
                slot.state = "suspended"
                self._active -= 1
            elif slot.again and not self.closing:
                slot.again, slot.state, again = False, "queued", True
            else:
                del self._slots[workflow_id]
                running = {step: task for step, task in slot.tasks.items() if task.scope.abandoned
                           and task.outcome is None and task.broken is None}
                if running:
                    self._abandoned[workflow_id] = running
                self._active -= 1
                self.cancelled.pop(workflow_id, None)
                for target in slot.watching:
                    waiting = self._waiters.get(target)
                    if waiting is not None:
                        waiting.discard(workflow_id)
                        if not waiting:
                            del self._waiters[target]
        if again:
            self.run_pool.submit(lambda: self._drive(workflow_id))
        if suspended:
            assert run is not None and run.wake_ready is not None
            if run.wake_deadline is not None:
                self.add_timer(run.wake_deadline, lambda: self.notify(workflow_id))
            if run.wake_ready():  # it happened while we were unwinding
                self.schedule(workflow_id)

    def _run(self, run: WorkflowRun) -> None:
        definition = run.definition
        token = enter(run)
        outcome: Outcome | None
        hint: Any = Any
        try:
            args, kwargs = self.codec.decode_args(
                definition.fn, run.row.inputs, f"inputs of workflow {run.workflow_id!r}"
            )
            hint = definition.return_hint  # resolved now: an unresolvable hint fails the run
            outcome = Outcome(value=definition.fn(*args, **kwargs))
        except _Unwind:
            outcome = None
        except BaseException as exc:
            # SystemExit or KeyboardInterrupt raised by the workflow's code (or by a step and
            # let through) is its outcome like any error: left unrecorded, the workflow would
            # stay pending and run again at every recovery.
            outcome = Outcome(error=exc)
        finally:
            leave(token)
        if self.hooks.crashed is not None:
            raise self.hooks.crashed  # a simulated crash unwound the run: record nothing
        fatal = run.fatal
        if isinstance(fatal, WorkflowCancelledError):
            run.ended = True  # already recorded by cancel()
            return
        if isinstance(fatal, _Unwind):
            return  # suspended or closing: still pending
        if isinstance(fatal, NonDeterminismError):
            self.finish(run.workflow_id, Status.NONDETERMINISTIC, Outcome(error=fatal), run.row)
            run.ended = True
            return
        if fatal is not None:
            raise fatal
        assert outcome is not None
        self.hooks.fire("before_outcome", workflow_id=run.workflow_id)
        self.finish(run.workflow_id, None, outcome, run.row, hint=hint)
        run.ended = True
        self.hooks.fire("after_outcome", workflow_id=run.workflow_id)

    def finish(
        self, workflow_id: str, status: Status | None, outcome: Outcome,
        row: WorkflowRow | None = None,
        *,
        hint: Any = None,
    ) -> None:
        """Record the workflow's outcome (status defaults from the outcome) and wake waiters.

        ``row``, the workflow as its run loaded it, makes the write a single statement.
        ``hint``, the workflow's return type, checks that its result reads back as itself
        (else the workflow fails now, not its callers later).
        """
        output = error = None
        if outcome.error is None:
            what = f"the result of workflow {workflow_id!r}"
            try:
                output = self.codec.encode(outcome.value, what)
                if hint is not None:
                    self.codec.replayed(outcome.value, output, hint, what)
            except SerializationError as exc:
                output, outcome = None, Outcome(error=exc)
        if outcome.error is not None:
            error = self.codec.encode_error(outcome.error)
        if status is None:
            status = Status.SUCCEEDED if outcome.error is None else Status.FAILED
        self.journal.finish_workflow(
            workflow_id, self.owner, status=status, output=output, error=error,
            now=self.clock.now(), known=row,
        )
        self.announce_finished([workflow_id])

    def expect_outcome(self, workflow_id: str) -> threading.Event:
        """An event set when ``workflow_id`` may have left ``pending``, here or elsewhere.

        For ``Handle.result`` outside workflows: register, clear, read the row, then wait, and
        no outcome is missed. Each outcome wakes only the threads waiting for that workflow.
        Pair with ``forget_outcome``.
        """
        event = threading.Event()  # one per waiter: a waiter clears only its own
        with self._lock:
            idle = not (self._result_events or self._active or self._waiters)
            self._result_events.setdefault(workflow_id, []).append(event)
        if idle:
            self._watch_wake.set()  # the commit watcher leaves its idle pace now
        return event

    def forget_outcome(self, workflow_id: str, event: threading.Event) -> None:
        with self._lock:
            events = self._result_events[workflow_id]
            events.remove(event)
            if not events:
                del self._result_events[workflow_id]

    def announce_finished(self, workflow_ids: Sequence[str]) -> None:
        """Wake the ``Handle.result`` waiters and the workflows waiting on ``workflow_ids``."""
        with self._lock:
            events = [e for wid in workflow_ids for e in self._result_events.get(wid, ())]
            waiting = {w for wid in workflow_ids for w in self._waiters.get(wid, ())}
        for event in events:
            event.set()
        for waiter in waiting:
            self.notify(waiter)

    def watch(self, waiter: str, target: str) -> None:
        """Wake ``waiter`` when ``target`` gets an outcome, here or in another process."""
        with self._lock:
            slot = self._slots.get(waiter)
            if slot is None:
                return
            slot.watching.add(target)
            self._waiters.setdefault(target, set()).add(waiter)

    @property
    def journal_frozen(self) -> bool:
        return self.journal.frozen

    # -- steps ----------------------------------------------------------------------------

    def start_task(self, task: StepTask) -> StepTask:
        """Run a ``go`` task on the step pool, or return the one already in flight.

        A task left by an earlier run that ended (cancelled, failed) is *abandoned*, and a run
        resumed since must not attach to it: unless its body still returns a value, it ends
        unrecorded and would leave the new run stalled until a recovery. So an abandoned task
        that recorded its value is used; one that ended unrecorded is replaced by ``task``;
        one whose body still runs (it ignores cancellation) is replaced too, but ``task`` only
        starts when that body ends, and takes over its value if it records one: a step body
        never runs twice at once, and never again once its value is recorded.
        """
        with self._lock:
            slot = self._slots.get(task.workflow_id)
            if slot is None:
                raise AppClosedError(f"workflow {task.workflow_id!r} is not running here")
            existing = slot.tasks.get(task.step)
            if existing is not None and (not existing.scope.abandoned
                                         or existing.outcome is not None):
                return existing
            slot.tasks[task.step] = task
            if existing is not None and existing.broken is None:
                existing.successor = task  # ``_hand_over`` starts it when ``existing`` ends
                return task
        if not self.step_pool.submit(lambda: self._run_task(task)):
            raise AppClosedError("the App is closing; no new steps start")
        return task

    def _run_task(self, task: StepTask) -> None:
        try:
            task.outcome = self.execute(task)
        except BaseException as exc:
            task.broken = exc
            quiet = JournalError | AppClosedError | WorkflowCancelledError
            if not self.journal_frozen and not isinstance(exc, quiet):
                log.exception("litedurable: step %s of %r failed to record", task.step,
                              task.workflow_id)
        finally:
            # Settled above, before the lock ``_hand_over`` takes, so ``start_task`` either
            # sees it settled or leaves a successor that ``_hand_over`` finds. Only abandoned
            # tasks get successors: the common path takes no extra lock.
            if task.scope.abandoned:
                self._hand_over(task)
            self.notify(task.workflow_id, step_settled=True)

    def _hand_over(self, task: StepTask) -> None:
        """An abandoned task ended: give its recorded value to, or start, its successor."""
        with self._lock:
            successor, task.successor = task.successor, None
            kept = self._abandoned.get(task.workflow_id)
            if kept is not None and kept.get(task.step) is task:
                del kept[task.step]
                if not kept:
                    del self._abandoned[task.workflow_id]
        if successor is None:
            return
        if task.outcome is not None:  # its value is recorded: the resumed run replays it
            successor.outcome = task.outcome
            if successor.scope.abandoned:  # resumed and cancelled again: pass the value on
                self._hand_over(successor)
        elif not self.step_pool.submit(lambda: self._run_task(successor)):
            successor.broken = AppClosedError("the App is closing; no new steps start")

    def execute(self, task: StepTask) -> Outcome:
        """Run a step body (with retries), record its outcome durably, return it as replay would."""
        hooks = self.hooks if self.hooks.callback is not None else None  # crash tests only
        info: dict[str, object] = {}
        if hooks:
            info = {"workflow_id": task.workflow_id, "step": task.step, "name": task.name}
            hooks.fire("before_step", **info)
        started = self.clock.now()
        outcome = self._invoke(task)
        if task.scope.abandoned and outcome.error is not None:
            raise WorkflowCancelledError(
                f"step {task.step} ({task.name}) of workflow {task.workflow_id!r} was abandoned "
                "when its workflow ended; it is not recorded, so a resume runs it again"
            )
        if hooks:
            hooks.fire("after_body", **info)
        outcome = self.record_outcome(task, outcome, started)
        if hooks:
            hooks.fire("after_commit", **info)
        return outcome

    def _invoke(self, task: StepTask) -> Outcome:
        scope = task.scope
        token = enter(scope)
        attempt = 1
        try:
            while True:
                if scope.cancel_requested:
                    return Outcome(error=_step_cancelled(task))
                try:
                    return Outcome(value=task.fn(*task.args, **task.kwargs))
                except BaseException as exc:  # SystemExit too: it is the body's outcome
                    if scope.cancel_requested:
                        return Outcome(error=_step_cancelled(task))
                    if task.retry is None or not task.retry.should_retry(attempt, exc):
                        return Outcome(error=exc)
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
                      started, self.clock.now())
        self.journal.record_step(row, self.owner)
        # Hand back what replay will hand back, so both runs agree: the value as decoded, the
        # exception as rebuilt from its record (its class, args and attributes as stored).
        if output is not None:
            return Outcome(value=value)
        assert error is not None
        return Outcome(error=self.codec.decode_error(error))

    def record(self, run: WorkflowRun, step: int, kind: str, name: str, value: Any,
               hint: Any, *, extra: bytes | None = None, open_row: bool = False,
               error: BaseException | None = None) -> Any:
        """Record a value the engine produced (a time, an id, a decision) as step ``step``.

        ``open_row`` writes a row that a later ``record`` of the same step completes (a select
        with a timeout records its deadline first, its decision later). With ``error`` the
        row records that exception instead of ``value`` (and None is returned).
        """
        now = self.clock.now()
        what = f"{kind} at step {step} of workflow {run.workflow_id!r}"
        output = None if error is not None else self.codec.encode(value, what)
        failure = None if error is None else self.codec.encode_error(error)
        finished = None if open_row else now
        self.journal.record_step(
            StepRow(run.workflow_id, step, kind, name, output, failure, extra, now, finished),
            self.owner,
        )
        return None if output is None else self.codec.replayed(value, output, hint, what)

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

    # -- timers ---------------------------------------------------------------------------

    def add_timer(self, deadline: float, action: Callable[[], None]) -> None:
        """Call ``action`` on the timer thread once the clock reaches ``deadline``."""
        with self._timer_cond:
            heapq.heappush(self._timers, (deadline, next(self._timer_seq), action))
            self._timer_cond.notify()

    def _timer_loop(self) -> None:
        """Fire due timers until the App closes; no exception ends the thread.

        Every sleep, select timeout, deadline and suspended wake-up of the App rides on this one
        thread, so a failure here (a timer action, or a custom ``Clock`` that raises) is
        logged and the loop goes on; a second failure in a row backs off briefly so that a
        clock that always raises costs a log line per second, not a busy CPU.
        """
        failures = 0
        while not self.closing:
            try:
                self._fire_due_timers()
                failures = 0
            except BaseException as exc:
                if self.journal_frozen:
                    return
                failures += 1
                log.error("litedurable: the timer thread hit an error and carries on: %r", exc,
                          exc_info=failures == 1)
                if failures > 1:
                    time.sleep(min(1.0, 0.01 * failures))

    def _fire_due_timers(self) -> None:
        """Wait for the earliest timer (or a new one), then run every action that is due."""
        due: list[Callable[[], None]] = []
        with self._timer_cond:
            if self.closing:
                return
            now = self.clock.now()
            while self._timers and self._timers[0][0] <= now:
                due.append(heapq.heappop(self._timers)[2])
            if not due:
                self.clock.wait(self._timer_cond, self._timers[0][0] if self._timers else None)
        for action in due:
            try:
                action()
            except BaseException as exc:
                if not self.journal_frozen and not isinstance(exc, AppClosedError):
                    log.warning("litedurable: a timer action failed: %r", exc)

    # -- deadlines ------------------------------------------------------------------------

    def _arm_deadline(self, slot: _Slot, row: WorkflowRow) -> bool:
        """Set the timer for ``row``'s deadline once; False if it has already passed."""
        assert row.deadline is not None
        if self.clock.now() >= row.deadline:
            self.expire(row.workflow_id)
            return False
        if not slot.deadline_armed:
            slot.deadline_armed = True
            self.add_timer(row.deadline, lambda: self.expire(row.workflow_id))
        return True

    def expire(self, workflow_id: str) -> None:
        """Cancel the workflow (and its children) if it is pending past its deadline."""
        row = self.journal.get_workflow(workflow_id)
        if row is None or row.status != Status.PENDING or row.deadline is None:
            return  # finished, or resumed (which clears the deadline)
        self.cancel(workflow_id, WorkflowTimedOutError(
            f"workflow {workflow_id!r} ran past its deadline "
            f"({to_datetime(row.deadline).isoformat()}) and was cancelled with its children; "
            "give it a longer timeout=, or app.resume() it (a resumed workflow has no deadline)"
        ))

    # -- other processes ------------------------------------------------------------------

    def _watch_loop(self) -> None:
        interval = WATCH_INTERVAL
        while True:
            self._watch_wake.wait(interval)
            self._watch_wake.clear()
            if self.closing:
                return
            busy = self._result_events or self._active or self._waiters
            interval = WATCH_INTERVAL if busy else IDLE_WATCH_INTERVAL
            try:
                if self.journal.changed_elsewhere():
                    self._foreign_change()
            except AppClosedError:
                return
            except BaseException as exc:
                if self.journal_frozen:
                    return
                log.warning("litedurable: watching for other processes' commits failed: %s", exc)

    def _foreign_change(self) -> None:
        """Another process committed: deliver its cancellations and finished workflows here.

        Suspended workflows are left out: they read their row again when they are driven.
        """
        with self._lock:
            running = [wid for wid, s in self._slots.items() if s.state != "suspended" or s.tasks]
            targets = list(self._waiters)
            awaited = list(self._result_events)
        statuses = self.journal.statuses([*running, *targets, *awaited])
        gone = [w for w in running if statuses.get(w) == Status.CANCELLED]
        if gone:
            self.cancel_local(gone)
        # Workflows wait for a settled outcome; Handle.result returns on any non-pending status
        # (and reports a workflow deleted meanwhile).
        self.announce_finished(
            [t for t in targets if statuses.get(t, "pending") in SETTLED]
            + [a for a in awaited if statuses.get(a) != Status.PENDING]
        )

    # -- cancellation and shutdown --------------------------------------------------------

    def cancel(self, workflow_id: str, error: WorkflowCancelledError) -> list[str]:
        """Cancel a workflow tree in the journal and stop what of it runs here."""
        done = cancel_tree(self.journal, self.codec, workflow_id, self.clock.now(), error)
        self.cancel_local(done, error)
        self.announce_finished(done)
        return done

    def resume_local(self, workflow_id: str) -> None:
        """The journal made ``workflow_id`` pending under this owner again: drive it."""
        with self._lock:
            self.cancelled.pop(workflow_id, None)
        self.schedule(workflow_id)

    def cancel_local(self, workflow_ids: Sequence[str],
                     reason: WorkflowCancelledError | None = None) -> None:
        """Deliver cancellation to the runs and steps of workflows running here."""
        with self._lock:
            for wid in workflow_ids:
                slot = self._slots.get(wid)
                if slot is None:
                    continue
                self.cancelled[wid] = reason or WorkflowCancelledError(
                    f"workflow {wid!r} was cancelled"
                )
                tasks = list(slot.tasks.values())
                if slot.run is not None and slot.run.inline is not None:
                    tasks.append(slot.run.inline)
                for task in tasks:
                    task.scope.request_cancel(abandon=True)
        for wid in workflow_ids:
            self.notify(wid)

    def shutdown(self, grace: float) -> list[str]:
        """Unwind every run, give step bodies ``grace`` seconds, join all threads.

        Returns the names of threads that did not finish in time.
        """
        with self._lock:
            self.closing = True
            runs = [s.run for s in self._slots.values() if s.run is not None]
            tasks = [t for s in self._slots.values() for t in s.tasks.values()]
            # Inline steps too: one waiting out a retry delay must hear the close at once.
            tasks += [s.run.inline for s in self._slots.values()
                      if s.run is not None and s.run.inline is not None]
        self.run_pool.discard_queued()
        self.step_pool.discard_queued()
        for run in runs:
            run.notify()
        for task in tasks:
            with task.scope.cond:
                task.scope.cond.notify_all()
        with self._timer_cond:
            self._timer_cond.notify_all()
        self._watch_wake.set()
        deadline = time.monotonic() + grace
        stuck = self.run_pool.shutdown(grace)
        stuck += self.step_pool.shutdown(max(0.0, deadline - time.monotonic()))
        self._timer_thread.join(max(0.1, deadline - time.monotonic()))
        self._watch_thread.join()
        with self._lock:
            events = [e for waiting in self._result_events.values() for e in waiting]
        for event in events:  # Handle.result waiters read again, and learn the App closed
            event.set()
        return stuck


def replay_journal(
    journal: Journal, codec: Codec, clock: Clock, registry: Registry, row: WorkflowRow
) -> str | None:
    """Replay a recorded workflow with no step bodies and no writes (``litedurable replay``).

    Returns None if the code reproduces the journal up to where it ends, else what differs.
    """
    definition = registry.workflows[row.name]
    runtime = Runtime(
        journal=journal, codec=codec, clock=clock, registry=registry, owner="offline-replay",
        app_version=row.app_version, workers=1, workflow_threads=1, suspend_after=0.0,
        hooks=Hooks(),
    )
    try:
        run = WorkflowRun(runtime, definition, row, journal.load_steps(row.workflow_id))
        run.replay_only = True
        token = enter(run)
        try:
            args, kwargs = codec.decode_args(definition.fn, row.inputs, "inputs")
            value = definition.fn(*args, **kwargs)
        except _Unwind:
            return None
        except BaseException as exc:  # SystemExit too: a recorded outcome like any other
            if isinstance(run.fatal, NonDeterminismError):
                # Its own message says the workflow was parked; offline replay parks nothing.
                step = run.fatal.step
                return (
                    f"not deterministic: step {step} was recorded as {run.fatal.recorded} but "
                    f"the code now calls {run.fatal.called} (replay changed nothing). Restore the "
                    f"code that started it, or fork it from before step {step} "
                    f"(app.fork(id, from_step={step}))."
                )
            if row.status == Status.FAILED:
                return None
            return f"replay raised {type(exc).__name__}: {exc}, but the workflow is {row.status}"
        finally:
            leave(token)
        if (row.status == Status.SUCCEEDED and row.output is not None
                and codec.encode(value, "replayed result") != row.output):
            return "replay returned a different result than the one recorded"
        return None
    finally:
        runtime.shutdown(1.0)


SETTLED = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
"""Statuses a waiting workflow takes as the outcome. The parked ones (nondeterministic,
exhausted) are not: they wait for someone to fix and resume them, or to cancel them."""


def cancel_tree(journal: Journal, codec: Codec, workflow_id: str, now: float,
                error: WorkflowCancelledError | None = None) -> list[str]:
    """Cancel ``workflow_id`` and its pending non-detached descendants; the ids cancelled.

    Every one of them records ``error`` (default: a plain ``WorkflowCancelledError`` naming
    ``workflow_id``) as its outcome, so whoever waits on a child learns why it stopped.
    """
    error = error or WorkflowCancelledError(f"workflow {workflow_id!r} was cancelled")
    return journal.cancel(workflow_id, codec.encode_error(error), now)


def _step_cancelled(task: StepTask) -> StepCancelledError:
    return StepCancelledError(
        f"step {task.step} ({task.name}) of workflow {task.workflow_id!r} was cancelled"
    )
