"""Durable concurrency inside a workflow: ``go``, futures, ``select`` and friends.

Every choice is a journal row keyed by the workflow id and a step number taken in the
workflow thread at call time:

* ``go`` takes a number and starts the body on the step pool; its row is written when the body
  finishes, and its future settles only after that row is durable.
* ``select`` (and each ``as_completed`` yield) takes a number, waits until a candidate settles,
  and commits ``{"candidates": [...], "winner": i}`` before returning. Replay returns the
  recorded winner even if another candidate is faster this time; a different candidate list is
  a ``NonDeterminismError``. Several candidates settled at once: the lowest step number wins.
* ``after``/``sleep`` record the absolute deadline when first executed; replay waits only for
  what is left.

``wait_all`` and ``Future.result()`` choose nothing, so they take no step number.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import random as _random
import uuid as _uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

from ._clock import to_datetime
from ._codec import return_hint
from ._context import current
from ._errors import (
    NotInWorkflowError,
    StepCancelledError,
    UsageError,
    WaitTimeoutError,
)
from ._registry import StepDef, callable_name, refuse_async
from ._run import WorkflowRun, current_run, current_step
from ._steps import Outcome, StepScope, StepTask
from ._storage import StepRow
from ._types import StepKind, to_seconds

__all__ = [
    "ExternalFuture",
    "Future",
    "Waitable",
    "after",
    "as_completed",
    "cancelled",
    "go",
    "idempotency_key",
    "is_replaying",
    "logger",
    "named",
    "now",
    "random",
    "run",
    "select",
    "sleep",
    "uuid4",
    "wait_all",
    "workflow_id",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
P = ParamSpec("P")


class Waitable(Protocol[T_co]):
    """What ``select``/``as_completed``/``wait_all`` accept, for static checkers.

    At run time they take ``Future``s only, but ``app.start`` inside a workflow returns a
    ``ChildHandle`` (a ``Future``) whose static type is ``Handle[R]`` (the same call outside a
    workflow returns a plain handle). Both have this shape, so a child handle type-checks in
    ``ld.select([child, ld.after(5)])``; a plain handle is refused when the call runs.
    """

    def result(self, timeout: float | timedelta | None = None) -> T_co: ...

    def cancel(self) -> bool: ...


class Future(Generic[T]):
    """The eventual outcome of a ``go`` step or an ``after`` timer, inside one workflow run.

    Waiting on a future is deterministic (its outcome comes from the journal), so
    ``result()`` may be called freely in workflow code. ``done()`` is only a snapshot: branching
    on it makes replay diverge; race futures with ``select`` instead.
    """

    __slots__ = ("_run", "step")

    def __init__(self, run: WorkflowRun, step: int) -> None:
        self._run = run
        self.step = step
        """The step number this future's ``go`` or ``after`` call took."""

    # -- subclass interface ---------------------------------------------------------------

    def _settled(self) -> bool:
        raise NotImplementedError

    def _outcome(self) -> Outcome:
        raise NotImplementedError

    def _deadline(self) -> float | None:
        """For a timer, its deadline (waits wake then); None for everything else."""
        return None

    def _raise_if_broken(self) -> None:
        """Raise the engine failure that keeps this future from ever settling, if any."""

    # -- public ---------------------------------------------------------------------------

    def done(self) -> bool:
        """True if the outcome is known now. A snapshot, not recorded: see the class doc."""
        return self._settled()

    def result(self, timeout: float | timedelta | None = None) -> T:
        """The value, or the recorded exception raised again.

        Without ``timeout`` this takes no step number. With one it is a journaled
        ``select([self], timeout=timeout)`` so a replay times out exactly when the first run
        did; on expiry it raises ``WaitTimeoutError``.
        """
        run = self._check_run("Future.result")
        if timeout is not None:
            select([self], timeout=timeout)
        else:
            with wait_point(run):
                wait_until(run, [self], all_settled=True)
        value: T = self._outcome().get()
        return value

    def exception(self, timeout: float | timedelta | None = None) -> BaseException | None:
        """The recorded exception, or None if the future succeeded (waits like ``result``)."""
        if timeout is not None:
            # The recorded decision says whether the wait timed out; the future may settle
            # right after it, and a replay must raise exactly when this run did.
            select([self], timeout=timeout)
        try:
            self.result()
        except Exception as exc:
            return exc
        return None

    def cancel(self) -> bool:
        """Ask for cancellation; True if the request was delivered.

        A step that has not started never starts; a running one sees ``ld.cancelled()`` become
        True. Either way its recorded outcome becomes ``StepCancelledError`` unless the body
        returns a value anyway (finished work is kept). A timer future is cancelled at once.
        The return value of a step future's ``cancel`` is a snapshot, not recorded: do not
        branch on it.
        """
        raise NotImplementedError

    def _check_run(self, call: str) -> WorkflowRun:
        run = current_run(call)
        if run is not self._run:
            raise UsageError(
                f"{call} on a future from another workflow run (step {self.step} of "
                f"{self._run.workflow_id!r}). Futures live inside the run that created them; "
                "pass values between workflows through their results."
            )
        return run

    def __repr__(self) -> str:
        state = "done" if self._settled() else "pending"
        return f"<{type(self).__name__} step={self.step} {state}>"


class _StepFuture(Future[T]):
    """A ``go`` step: backed by a recorded row, or by a task running (or finished) here."""

    __slots__ = ("_hint", "_recorded", "_task")

    def __init__(self, run: WorkflowRun, step: int, hint: Any, *,
                 recorded: Outcome | None = None, task: StepTask | None = None) -> None:
        super().__init__(run, step)
        self._hint = hint
        self._recorded = recorded
        self._task = task

    def _settled(self) -> bool:
        task = self._task
        return self._recorded is not None or (
            task is not None and (task.outcome is not None or task.broken is not None)
        )

    def _raise_if_broken(self) -> None:
        if self._task is not None and self._task.broken is not None:
            raise self._run.remember(self._task.broken)

    def _outcome(self) -> Outcome:
        if self._recorded is not None:
            return self._recorded
        self._raise_if_broken()
        assert self._task is not None and self._task.outcome is not None
        return self._task.outcome

    def cancel(self) -> bool:
        self._check_run("Future.cancel")
        if self._settled():
            return False
        assert self._task is not None
        self._task.scope.request_cancel()
        return True


class _TimerFuture(Future[None]):
    """An ``after`` timer: settled once the clock reaches its recorded deadline."""

    __slots__ = ("_cancelled", "deadline")

    def __init__(self, run: WorkflowRun, step: int, deadline: float) -> None:
        super().__init__(run, step)
        self.deadline = deadline
        self._cancelled = False

    def _settled(self) -> bool:
        return self._cancelled or self._run.runtime.clock.now() >= self.deadline

    def _deadline(self) -> float | None:
        return None if self._cancelled else self.deadline

    def _outcome(self) -> Outcome:
        if self._cancelled:  # deterministic: the same code cancels it at the same point
            return Outcome(error=StepCancelledError(f"timer at step {self.step} was cancelled"))
        return Outcome(value=None)

    def cancel(self) -> bool:
        self._check_run("Future.cancel")
        if self._settled():
            return False
        self._cancelled = True
        return True


class ExternalFuture(Future[T]):
    """A future settled by the world outside the workflow: a message, an event, a promise.

    Unlike a ``go`` step nothing here runs it: its outcome appears in the storage (sent by
    another workflow, another process, an HTTP handler) and becomes this workflow's by a
    journaled write the workflow makes itself (consuming a message, copying an event) or by
    the settlement itself (a promise). ``_refresh`` does that I/O: it runs in the workflow's
    thread, outside ``WorkflowRun.cond``, before each wait that includes the future and after
    each wake-up (``Runtime.delivered``, or the commit watcher). ``_probe`` is the read-only
    question the commit watcher asks for a workflow waiting on it: "might ``_refresh`` settle
    it now?".
    """

    __slots__ = ("_hint", "_taken")

    def __init__(self, run: WorkflowRun, step: int, hint: Any,
                 taken: Outcome | None = None) -> None:
        super().__init__(run, step)
        self._hint = hint
        self._taken = taken

    def _settled(self) -> bool:
        return self._taken is not None

    def _outcome(self) -> Outcome:
        assert self._taken is not None
        return self._taken

    def _refresh(self) -> None:
        raise NotImplementedError

    def _probe(self) -> bool:
        raise NotImplementedError

    def cancel(self) -> bool:
        """Nothing to cancel: the future stops mattering once the workflow stops waiting."""
        self._check_run("Future.cancel")
        return False


# -- starting steps ---------------------------------------------------------------------


def _step_parts(fn: Callable[..., Any]) -> tuple[str, Callable[..., Any], Any, Any]:
    """(name, body, retry, return hint) of a decorated step or any callable."""
    definition = getattr(fn, "__litedurable_step__", None)
    if isinstance(definition, StepDef):
        return definition.name, definition.fn, definition.retry, definition.return_hint
    if getattr(fn, "__litedurable_workflow__", None) is not None:
        raise UsageError(
            f"{callable_name(fn)} is a workflow, not a step: start it as a child workflow with "
            "app.start(...) instead of running it as a step"
        )
    if not callable(fn):
        raise TypeError(f"expected a callable, got {type(fn).__name__}")
    refuse_async(fn, "step")
    return callable_name(fn), fn, None, return_hint(fn)


def go(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
    """Start ``fn(*args, **kwargs)`` as a step on the App's step pool; return its future.

    The step number is taken now, in the workflow thread. A recorded outcome resolves the
    future at once without running the body; a body already running in this process (the
    workflow was suspended and replayed) is attached to, never started twice.

    Raises:
        NotInWorkflowError: outside a workflow. UsageError: from a step or another thread.
    """
    wf_run = current_run("go")
    name, body, retry, hint = _step_parts(fn)
    runtime = wf_run.runtime

    def replay(step: int, row: StepRow) -> Future[T]:
        return _StepFuture(wf_run, step, hint, recorded=runtime.steps.replay(row, hint))

    def live(step: int) -> Future[T]:
        task = StepTask(wf_run.workflow_id, step, StepKind.GO, name, body, args, kwargs, retry,
                        hint)
        task.site = runtime.steps.sites.get((wf_run.workflow_id, step))
        return _StepFuture(wf_run, step, hint, task=runtime.start_task(task))

    return wf_run.journaled(StepKind.GO, name, replay, live)


def run(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn(*args, **kwargs)`` now as a checkpointed inline step (DBOS ``RunAsStep``).

    Outside a workflow, or inside a step, it is a plain call.
    """
    scope = current()
    if not isinstance(scope, WorkflowRun):
        return fn(*args, **kwargs)
    name, body, retry, hint = _step_parts(fn)
    value: T = scope.call_step(StepKind.STEP, name, body, args, kwargs, retry, hint)
    return value


def named(name: str, fn: Callable[P, T]) -> Callable[P, T]:
    """``fn`` under a step name of your choosing (for lambdas and partials in ``go``/``run``)."""
    if not isinstance(name, str) or not name:
        raise UsageError("ld.named() needs a non-empty step name")

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return fn(*args, **kwargs)

    wrapper.__litedurable_name__ = name  # type: ignore[attr-defined]
    return wrapper


# -- choosing -----------------------------------------------------------------------------


def _check_futures(
    wf_run: WorkflowRun, futures: Iterable[Waitable[Any]], call: str
) -> list[Future[Any]]:
    futs: list[Future[Any]] = []
    for f in futures:
        if not isinstance(f, Future):
            raise TypeError(
                f"ld.{call}() takes litedurable futures (from ld.go, ld.after, or app.start "
                f"of a child inside this workflow), got a {type(f).__name__}"
            )
        futs.append(f)
    for f in futs:
        if f._run is not wf_run:
            raise UsageError(
                f"ld.{call}() got a future from another workflow run (step {f.step} of "
                f"{f._run.workflow_id!r}); futures live inside the run that created them"
            )
    return futs


def wait_until(wf_run: WorkflowRun, futs: list[Future[Any]], *, all_settled: bool,
                deadline: float | None = None) -> None:
    """Wait until one (or all) of ``futs`` settle, or ``deadline``, waking at timer deadlines."""
    clock = wf_run.runtime.clock
    check = all if all_settled else any
    timer_only = all(isinstance(f, _TimerFuture) for f in futs)
    steps = [f for f in futs if isinstance(f, _StepFuture)]
    external = [f for f in futs if isinstance(f, ExternalFuture)]
    # Only "all" waits are filtered: an "any" wait is ready at the first settled candidate,
    # so a filter would save nothing and cost a scan per finishing step.
    steps_ready = _AllSettled(steps) if all_settled and steps else None

    def ready() -> bool:
        return check(f._settled() for f in futs)

    while True:
        pokes = wf_run.pokes  # read before looking: a poke after the look wakes the wait
        if external and not wf_run.replay_only:  # an offline replay writes nothing
            # In step order: the older future takes the older message.
            for f in sorted((f for f in external if not f._settled()), key=lambda f: f.step):
                f._refresh()
                if f._settled() and not all_settled:
                    break
        if ready():
            return
        pending = [d for f in futs if not f._settled() and (d := f._deadline()) is not None]
        wake = min([*pending, *([] if deadline is None else [deadline])], default=None)
        if external:
            wf_run.listening = [f._probe for f in external if not f._settled()]
            wf_run.wait(functools.partial(_poked_or, ready, wf_run, pokes), wake,
                        timer_only=False, steps_ready=steps_ready)
            wf_run.listening = []
        else:
            wf_run.wait(ready, wake, timer_only=timer_only, steps_ready=steps_ready)
        if deadline is not None and clock.now() >= deadline:
            return


def _poked_or(ready: Callable[[], bool], wf_run: WorkflowRun, pokes: int) -> bool:
    """An external wait's predicate: ready, or poked since ``pokes`` (look again)."""
    return ready() or wf_run.pokes != pokes


class _AllSettled:
    """True once every one of ``futures`` has settled: the wake-up filter of an "all" wait.

    Called by finishing steps (under the run's condition, so one at a time) to decide whether
    to wake the workflow. Settling is permanent, so it resumes from the first future not yet
    seen settled: all calls together cost one pass over the list plus one look per call, not
    a pass per finishing step.
    """

    __slots__ = ("_futures", "_next")

    def __init__(self, futures: list[_StepFuture[Any]]) -> None:
        self._futures = futures
        self._next = 0

    def __call__(self) -> bool:
        futures, i = self._futures, self._next
        while i < len(futures) and futures[i]._settled():
            i += 1
        self._next = i
        return i == len(futures)


def _choose(wf_run: WorkflowRun, futs: list[Future[Any]], timeout: float | None,
            kind: StepKind) -> Future[Any]:
    """One durable decision: which of ``futs`` settled first (a select or an as_completed yield)."""
    with wait_point(wf_run):
        return _decide(wf_run, futs, timeout, kind)


def _decide(wf_run: WorkflowRun, futs: list[Future[Any]], timeout: float | None,
            kind: StepKind) -> Future[Any]:
    runtime = wf_run.runtime
    candidates = [f.step for f in futs]

    def replay(step: int, row: StepRow) -> Future[Any]:
        extra = json.loads(row.extra or b"{}")
        if extra.get("candidates") != candidates:
            recorded = extra.get("candidates")
            raise wf_run.diverged(step, f"{kind} over {recorded}", f"{kind} over {candidates}",
                                  recorded_shown=f"{kind} over steps {recorded}",
                                  called_shown=f"{kind} over steps {candidates}")
        if row.finished_at is not None:
            winner = extra["winner"]
            if winner < 0 and runtime.faults.defects and runtime.faults.broken(
                    "redecide_timeout"):  # a negative control's broken engine, never otherwise
                for f in futs:
                    if isinstance(f, ExternalFuture) and not f._settled():
                        f._refresh()
                winner = next((i for i, f in enumerate(futs) if f._settled()), -1)
            return _decided(wf_run, futs, step, winner)
        return _wait_and_decide(wf_run, futs, candidates, step, kind,
                                extra.get("deadline"))  # still open

    def live(step: int) -> Future[Any]:
        deadline: float | None = None
        if timeout is not None:  # the deadline is recorded first: replay waits only the rest
            deadline = runtime.clock.now() + timeout
            opening = json.dumps({"candidates": candidates, "deadline": deadline}).encode()
            runtime.steps.record(wf_run.workflow_id, step, kind, kind, None, Any, extra=opening,
                                 open_row=True)
        return _wait_and_decide(wf_run, futs, candidates, step, kind, deadline)

    return wf_run.journaled(kind, kind, replay, live)


def _wait_and_decide(wf_run: WorkflowRun, futs: list[Future[Any]], candidates: list[int],
                     step: int, kind: StepKind, deadline: float | None) -> Future[Any]:
    """Wait for the first candidate to settle (or ``deadline``); record which one won."""
    runtime = wf_run.runtime
    wait_until(wf_run, futs, all_settled=False, deadline=deadline)
    settled = [i for i, f in enumerate(futs) if f._settled()]
    for i in settled:
        futs[i]._raise_if_broken()  # a step whose row could not be written stops the run here
    winner = min(settled, key=lambda i: (futs[i].step, i)) if settled else -1
    info = {"workflow_id": wf_run.workflow_id, "step": step, "winner": winner}
    runtime.faults.fire("before_decision", **info)
    decision = json.dumps({"candidates": candidates, "winner": winner, "deadline": deadline})
    runtime.steps.record(wf_run.workflow_id, step, kind, kind, winner, int,
                         extra=decision.encode())
    runtime.faults.fire("after_decision", **info)
    return _decided(wf_run, futs, step, winner)


def _decided(wf_run: WorkflowRun, futs: list[Future[Any]], step: int, winner: int) -> Future[Any]:
    if winner < 0:
        raise WaitTimeoutError(
            f"select at step {step} of workflow {wf_run.workflow_id!r} timed out before any of "
            f"steps {[f.step for f in futs]} settled"
        )
    return futs[winner]


@overload
def select(futures: Iterable[Future[T]], timeout: float | timedelta | None = None) -> Future[T]: ...


@overload
def select(futures: Iterable[Waitable[Any]],
           timeout: float | timedelta | None = None) -> Waitable[Any]: ...


def select(futures: Iterable[Waitable[Any]],
           timeout: float | timedelta | None = None) -> Waitable[Any]:
    """Wait for the first of ``futures`` to settle (value or error) and return that very future.

    The decision is a journal row committed before this returns; replay returns the same
    future. Futures already settled count as tied: the lowest step number wins (so does the
    first of duplicates). ``timeout`` is a durable timer; on expiry ``WaitTimeoutError`` is
    raised, on replay too.

    Raises:
        ValueError: for an empty list. WaitTimeoutError: when ``timeout`` expires first.
    """
    wf_run = current_run("select")
    futs = _check_futures(wf_run, futures, "select")
    if not futs:
        raise ValueError("ld.select() needs at least one future (got an empty list)")
    seconds = None if timeout is None else to_seconds(timeout, "select timeout")
    return _choose(wf_run, futs, seconds, StepKind.SELECT)


@overload
def as_completed(futures: Iterable[Future[T]]) -> Iterator[Future[T]]: ...


@overload
def as_completed(futures: Iterable[Waitable[Any]]) -> Iterator[Waitable[Any]]: ...


def as_completed(futures: Iterable[Waitable[Any]]) -> Iterator[Waitable[Any]]:
    """Yield ``futures`` in durable completion order; each yield is a recorded decision.

    Duplicates are yielded once. The step number of each decision is taken when the next
    future is asked for, in the workflow thread.
    """
    wf_run = current_run("as_completed")
    remaining = list(dict.fromkeys(_check_futures(wf_run, futures, "as_completed")))

    def completions() -> Iterator[Waitable[Any]]:
        while remaining:
            chosen = _choose(wf_run, remaining, None, StepKind.AS_COMPLETED)
            remaining.remove(chosen)
            yield chosen

    return completions()


def wait_all(futures: Iterable[Waitable[T]]) -> list[T]:
    """Wait for every future; their values in argument order.

    After all have settled, the first failure in argument order is raised. Takes no step
    number (it decides nothing).
    """
    wf_run = current_run("wait_all")
    futs = _check_futures(wf_run, futures, "wait_all")
    with wait_point(wf_run):
        wait_until(wf_run, futs, all_settled=True)
    outcomes = [f._outcome() for f in futs]
    return [o.get() for o in outcomes]


# -- time and recorded values ---------------------------------------------------------------


def _deadline(kind: StepKind, delay: float | timedelta) -> tuple[WorkflowRun, int, float]:
    wf_run = current_run(kind)
    seconds = to_seconds(delay, f"ld.{kind}() delay")
    steps, clock = wf_run.runtime.steps, wf_run.runtime.clock
    step = wf_run.next_step
    deadline = wf_run.journaled(
        kind, kind, lambda _, row: float(steps.replay(row, float).get()),
        lambda step: float(steps.record(wf_run.workflow_id, step, kind, kind,
                                        clock.now() + seconds, float)),
    )
    return wf_run, step, deadline


def after(delay: float | timedelta) -> Future[None]:
    """A durable timer future that settles ``delay`` seconds after it was first created."""
    wf_run, step, deadline = _deadline(StepKind.AFTER, delay)
    return _TimerFuture(wf_run, step, deadline)


def sleep(delay: float | timedelta) -> None:
    """Sleep durably: the wake-up instant is recorded; after a restart only the rest is slept.

    A long sleep gives its thread back (the workflow is suspended and resumed by replay).
    """
    wf_run, _, deadline = _deadline(StepKind.SLEEP, delay)
    clock = wf_run.runtime.clock
    with wait_point(wf_run):
        while not wf_run.wait(lambda: clock.now() >= deadline, deadline, timer_only=True):
            if clock.now() >= deadline:
                return


def now() -> datetime:
    """The current time as an aware UTC datetime, recorded so replay sees the same instant."""
    wf_run = current_run("now")
    return to_datetime(wf_run.record_value(StepKind.NOW, wf_run.runtime.clock.now, float))


def uuid4() -> _uuid.UUID:
    """A random UUID, recorded so replay sees the same one."""
    wf_run = current_run("uuid4")
    return _uuid.UUID(wf_run.record_value(StepKind.UUID, lambda: str(_uuid.uuid4()), str))


def random() -> float:
    """A random float in [0, 1), recorded so replay sees the same one."""
    wf_run = current_run("random")
    return float(wf_run.record_value(StepKind.RANDOM, _random.random, float))


def workflow_id() -> str:
    """The id of the workflow the calling code belongs to (also inside its steps)."""
    scope = current()
    if scope is None:
        raise NotInWorkflowError(
            "ld.workflow_id() can only be called inside a workflow function or one of its steps"
        )
    return scope.workflow_id


def idempotency_key() -> str:
    """``"<workflow_id>:<step>"`` of the running step: stable across retries and re-runs.

    Pass it to external services that deduplicate requests, so a step that re-runs after a
    crash (steps are at-least-once) has its side effect applied once.
    """
    scope = current_step()
    if scope is None:
        raise NotInWorkflowError(
            "ld.idempotency_key() can only be called inside a step body (a function decorated "
            "with @app.step(), or run with ld.run() or ld.go())"
        )
    return scope.key


@contextlib.contextmanager
def wait_point(wf_run: WorkflowRun) -> Iterator[None]:
    """Count a blocking call that returned (or raised its own outcome) for ``is_replaying``.

    Waits that take no step number (``Future.result``, ``wait_all``) are invisible to step
    numbering, so a suspended run's position is (next step, waits passed). Every run counts
    the same calls whether they actually blocked or not, so replay reaches the same counts;
    an unwinding run (``fatal`` set) has not passed the wait and does not count it.
    """
    try:
        yield
    finally:
        if wf_run.fatal is None:
            wf_run.waits += 1


def is_replaying() -> bool:
    """Whether the calling workflow code is re-executing what an earlier run already executed.

    Workflow code outside steps runs again on every replay: after a crash, and whenever a
    suspended workflow is resumed. This is True from the start of such a run until it passes
    the last step an earlier run took (its recorded steps, and in this process the wait it
    suspended in), and False from then on. False outside a workflow and inside step bodies
    (a step body only runs live, never on replay), and True throughout an offline replay.
    """
    scope = current()
    if not isinstance(scope, WorkflowRun):
        return False
    return (scope.replay_only or scope.next_step < scope.replay_until
            or (scope.next_step, scope.waits) <= scope.resumed_from)


class _LiveOnly(logging.Filter):
    """Drops records emitted while the calling workflow is replaying (see ``is_replaying``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not is_replaying()


logger = logging.getLogger("litedurable.workflow")
"""A logger for workflow code: records made while the workflow replays are dropped, so each
message appears once per live execution. Outside a workflow and in steps it logs normally."""
logger.addFilter(_LiveOnly())


def cancelled() -> bool:
    """True if cancellation was requested for the running step (or the calling workflow).

    Long step bodies should check it and stop early; raising then records a cancellation.
    """
    scope = current()
    if isinstance(scope, StepScope):
        return scope.cancel_requested
    if isinstance(scope, WorkflowRun):
        return scope.workflow_id in scope.runtime.cancelled
    raise NotInWorkflowError("ld.cancelled() can only be called inside a workflow or a step")
