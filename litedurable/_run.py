"""One run of a workflow function, and ``journaled``: the one way it makes a journaled call.

Every call a workflow makes that the journal must remember (a step, a recorded value, a timer,
a select decision, a child start, a wait on another workflow, a cancel) is a *journaled call*:

1. take the next step number, in program order, in the workflow's own thread;
2. if the journal holds that step, check it is the same call (else the workflow is not
   deterministic) and **replay** it: hand back what was recorded, run nothing;
3. else run it **live**, which records its outcome before it returns;
4. an engine failure on the way (lost journal, lost ownership, cancellation, an unwind) is
   remembered as the run's ``fatal`` reason, so user code that catches it cannot carry on.

``WorkflowRun.journaled`` is that sequence; every journaled call is built on it, and so are
messages, events and queue enqueues.

A run that must wait longer than ``suspend_after`` seconds (or sleeps past it) *unwinds*: it
raises ``Unwind`` through the workflow function, gives its thread back, and is driven again
from the start when something it waits for happens. Replay is cheap (recorded steps return
their journaled outcome without running), so thousands of waiting workflows need no threads.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ._codec import error_text
from ._context import Scope, current
from ._errors import (
    AppClosedError,
    JournalError,
    NonDeterminismError,
    NotInWorkflowError,
    UsageError,
    WorkflowCancelledError,
)
from ._registry import WorkflowDef
from ._steps import Outcome, StepScope, StepTask
from ._storage import StepRow, WorkflowRow
from ._telemetry import replayed
from ._types import Retry

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["Unwind", "WorkflowRun", "call_site", "current_run", "current_step"]

T = TypeVar("T")

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


@functools.lru_cache(maxsize=256)
def _file_name(path: str) -> str:
    return os.path.basename(path)


def call_site() -> str | None:
    """Where the workflow's code made the journaled call being taken: ``"file.py:23"``.

    The first frame outside this package (the call passes through a few of ours). Recorded
    with each live call, so a timeline can point at the line and a ``NonDeterminismError``
    can say where the recorded call was made and where the code now calls something else.
    """
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return None
    return f"{_file_name(frame.f_code.co_filename)}:{frame.f_lineno}"


class Unwind(BaseException):
    """Leave the workflow function without recording anything (suspend or shutdown).

    A ``BaseException`` so ``except Exception`` in user code lets it pass.
    """


class WorkflowRun(Scope):
    """One execution of a workflow function in its run thread (there may be many over time).

    Holds the recorded journal loaded in one query, the next step number, and ``fatal``: the
    first engine-level reason to stop (unwind, cancellation, non-determinism, lost journal).
    Once set, every later journaled call raises it again.

    Threads: everything here runs in the run thread (``thread``), except ``notify`` (any
    thread) and the fields read by ``ld.is_replaying``. ``cond`` guards the wait: a waker
    notifies it while holding it, after changing what the wait's predicate reads.
    """

    __slots__ = (
        "cond", "definition", "ended", "fatal", "finished", "inline", "listening", "next_step",
        "pokes", "recorded", "replay_only",
        "replay_until", "resumed_from", "row", "runtime", "span", "steps_ready", "thread",
        "waits", "wake_deadline", "wake_ready",
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
        # Workflows this run may wait for that the runtime saw reach a settled status since
        # the run began (guarded by ``cond``): a wait reads this, never the storage.
        self.finished: set[str] = set()
        # Wake-ups for the external futures (messages, events, promises) a wait includes:
        # ``pokes`` counts them (guarded by ``cond``); ``listening`` holds the read-only probes
        # the commit watcher asks about other processes' commits (``ExternalFuture._probe``),
        # kept after an unwind so the suspended workflow is resumed when one answers yes.
        self.pokes = 0
        self.listening: list[Callable[[], bool]] = []
        self.span: Any = None  # this run's span when the App traces (``_telemetry``)

    # -- the journaled call ---------------------------------------------------------------

    def journaled(self, kind: str, name: str, replay: Callable[[int, StepRow], T],
                  live: Callable[[int], T]) -> T:
        """Make one journaled call: ``replay(step, row)`` if step ``step`` is recorded (as this
        ``kind`` and ``name``), else ``live(step)``, which records it.

        Both return what the call hands back; a step's own outcome is returned as an
        ``Outcome`` and raised by the caller (``get()``), outside this, so a user exception is
        never taken for an engine failure. Engine failures raised by either are remembered.
        """
        step, row = self.take(kind, name)
        try:
            if row is None:
                return live(step)
            if self.span is not None:  # traced: a replayed call is an event on the run's span
                replayed(self.span, step, kind, name)
            return replay(step, row)
        except BaseException as exc:
            raise self.remember(exc) from None
        finally:
            if row is None:  # recorded by now, or never: its call site is no longer needed
                self.runtime.steps.sites.pop((self.workflow_id, step), None)

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
        if row is None:
            if self.replay_only:
                self.fatal = Unwind("offline replay reached the end of the journal")
                raise self.fatal
            self.runtime.steps.sites[self.workflow_id, step] = call_site()
        elif row.kind != kind or row.name != name:
            raise self.diverged(step, f"{row.kind} {row.name}", f"{kind} {name}",
                                recorded_shown=f"{row.kind} {row.name!r}"
                                + (f" (at {row.site})" if row.site else ""),
                                called_shown=f"{kind} {name!r}"
                                + (f" (at {site})" if (site := call_site()) else ""))
        return step, row

    def diverged(self, step: int, recorded: str, called: str, *,
                 recorded_shown: str | None = None,
                 called_shown: str | None = None) -> NonDeterminismError:
        """The code no longer makes the call recorded at ``step``: stop, and say how to fix it.

        ``recorded`` and ``called`` become the error's fields, in the form callers match on
        (``"step charge"``: kind and name, unquoted, as before this primitive existed); the
        ``*_shown`` forms, if given, are how the message spells them.
        """
        said_recorded = recorded if recorded_shown is None else recorded_shown
        said_called = called if called_shown is None else called_shown
        error = NonDeterminismError(
            f"workflow {self.workflow_id!r} ({self.definition.name}) is not deterministic: "
            f"step {step} was recorded as {said_recorded} but the code now calls "
            f"{said_called}. The workflow is parked in status 'nondeterministic'. Restore the "
            "code that started it, or fork it from before step "
            f"{step} (app.fork(id, from_step={step})).",
            workflow_id=self.workflow_id, step=step, recorded=recorded, called=called,
        )
        self.fatal = error
        return error

    def unreached(self, raised: BaseException | None = None) -> NonDeterminismError | None:
        """The workflow function ended before a step the journal records: the code is not the
        code that recorded it (a step was removed, or the code returns earlier now).

        ``raised``: what the function raised, if it did; the message says it, since it is
        what explains the change (a new check, inputs the new signature cannot read).
        """
        later = [step for step in self.recorded if step >= self.next_step]
        if not later:
            return None
        row = self.recorded[min(later)]
        ended = "ended" if raised is None else f"raised {error_text(raised)}"
        return self.diverged(row.step, f"{row.kind} {row.name}",
                             f"nothing: the workflow function {ended} before reaching it",
                             recorded_shown=f"{row.kind} {row.name!r}")

    def check_interrupts(self) -> None:
        """Raise the reason this run must stop, if there is one."""
        if self.fatal is not None:
            raise self.fatal
        runtime = self.runtime
        if runtime.closing:
            self.fatal = Unwind("the App is closing; the workflow stays pending")
            raise self.fatal
        reason = runtime.cancelled.get(self.workflow_id)
        if reason is not None:
            self.fatal = reason
            raise self.fatal

    def remember(self, exc: BaseException) -> BaseException:
        """Remember an engine failure raised inside the run so it cannot be swallowed; return
        ``exc`` (a user exception passes through unremembered)."""
        # AppClosedError too: a step cut short by its App's close (a retry delay ended, a body
        # that used the closed App) is no outcome of the workflow's; raised into its code, the
        # workflow was recorded as failed by the close.
        engine = JournalError | AppClosedError | Unwind | WorkflowCancelledError
        if isinstance(exc, engine) and self.fatal is None:
            self.fatal = exc
        return exc

    # -- steps and recorded values --------------------------------------------------------

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
        steps = self.runtime.steps

        def live(step: int) -> Outcome:
            task = StepTask(self.workflow_id, step, kind, name, fn, args, kwargs, retry, hint)
            task.site = steps.sites.get((self.workflow_id, step))
            self.inline = task
            if self.workflow_id in self.runtime.cancelled:  # cancelled since take(): tell it
                task.scope.request_cancel(abandon=True)
            try:
                return steps.execute(task)
            finally:
                self.inline = None

        return self.journaled(kind, name, lambda _, row: steps.replay(row, hint), live).get()

    def record_value(self, kind: str, value: Callable[[], Any], hint: Any) -> Any:
        """A recorded nondeterministic value (``now``, ``uuid4``, ``random``)."""
        steps = self.runtime.steps
        return self.journaled(
            kind, kind, lambda _, row: steps.replay(row, hint),
            lambda step: Outcome(steps.record(self.workflow_id, step, kind, kind, value(), hint)),
        ).get()

    # -- waiting --------------------------------------------------------------------------

    def wait(self, ready: Callable[[], bool], deadline: float | None, *, timer_only: bool,
             steps_ready: Callable[[], bool] | None = None) -> bool:
        """Block until ``ready()`` or the clock reaches ``deadline``; True if ready.

        Unwinds (suspends the workflow, freeing this thread) when the wait outlasts
        ``suspend_after`` real seconds; a pure timer wait that long (in clock time) unwinds at
        once. ``deadline`` is clock time and the hold is real time: the two are never mixed,
        the clock is asked to wait for the one with the other as a cap.

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
                        self.fatal = Unwind(
                            "offline replay reached a wait the journal did not finish"
                        )
                        raise self.fatal
                    long_timer = (
                        timer_only and deadline is not None
                        and deadline - now > runtime.suspend_after
                    )
                    held = hold_until - time.monotonic()
                    if long_timer or held <= 0:
                        self.wake_ready, self.wake_deadline = ready, deadline
                        self.fatal = Unwind("suspended")
                        raise self.fatal
                    clock.wait(self.cond, deadline, held)
            finally:
                self.steps_ready = None

    def notify(self, *, step_settled: bool = False, finished: Sequence[str] = (),
               poked: bool = False) -> None:
        """Wake the run's wait; for a settled ``go`` step, only if the wait's filter allows.

        The filter is checked under ``cond`` after the step's outcome was set, and the wait
        checks ``ready()`` under ``cond`` before sleeping, so no wake-up is lost: either the
        wait saw the outcome, or it is asleep now and the filter sees it. ``finished`` names
        workflows that reached a settled status (see ``finished``). ``poked``: something an
        external future may be waiting for was committed (a message, an event, a promise).
        """
        with self.cond:
            self.finished.update(finished)
            if poked:
                self.pokes += 1
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
