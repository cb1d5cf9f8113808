"""The hub: ``App`` registers workflows and steps, owns the journal and the runtime, starts,
recovers, lists and cancels workflows; ``Handle`` waits on one.

Ownership across processes is a lease: each launched App has an owner token and a heartbeat
row stating its own lease. A pending workflow whose owner is gone (no row, a heartbeat older
than the owner's own lease, a dead pid in this very pid namespace, or a closed App in this very
process) is claimed by compare-and-swap on its owner column; the former owner's late writes are
then refused by the journal's fence.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, ParamSpec, TypeVar, overload

from ._clock import Clock, SystemClock, to_datetime
from ._codec import Codec
from ._concurrency import Future, WorkflowFuture, await_workflow, cancel_workflow
from ._context import current
from ._errors import (
    AppClosedError,
    InvalidIdError,
    JournalReadOnlyError,
    ScheduleNotFoundError,
    UsageError,
    WaitTimeoutError,
    WorkflowCancelledError,
    WorkflowConflictError,
    WorkflowExhaustedError,
    WorkflowNotFoundError,
)
from ._journal import (
    HOST,
    Durability,
    Journal,
    OwnerRow,
    ScheduleRow,
    StepRow,
    WorkflowRow,
    pid_namespace,
)
from ._registry import Registry, WorkflowDef
from ._runtime import Hooks, Outcome, Runtime, StepScope, WorkflowRun, replay_journal
from ._schedule import Cron, Scheduler
from ._types import (
    Retry,
    ScheduleInfo,
    Status,
    StepInfo,
    StepKind,
    WorkflowInfo,
    check_seconds,
    to_seconds,
)

__all__ = ["App", "ChildHandle", "Handle"]

log = logging.getLogger("litedurable")

P = ParamSpec("P")
R = TypeVar("R")

MAX_ID_LENGTH = 512
MAX_SETTING = 1e6
"""The largest duration setting of an App, in seconds (about 11.5 days): each one becomes a
thread's wait or join, which no platform accepts past ``threading.TIMEOUT_MAX``."""

UNVERSIONED = "unversioned"
"""The version recorded on workflows started by an App without ``app_version=``."""

# Owner tokens of the Apps launched and not closed in this process: a workflow owned by a token
# of this pid that is not here belongs to an App that closed or crashed, and is free to take.
_LIVE_OWNERS: set[str] = set()
# A child of fork() runs none of its parent's Apps (their threads did not cross the fork, their
# journals refuse it): were the parent's tokens kept, the child would never take over the
# workflows of a parent that died.
os.register_at_fork(after_in_child=_LIVE_OWNERS.clear)

# The heartbeat is written every lease/3 seconds, but never more often than MIN_BEAT (a write
# per beat) nor less often than MAX_BEAT (longer waits overflow the platform's timeouts). The
# lease an owner states in its row is the one it can keep: at least three beats.
MIN_BEAT = 0.05
MAX_BEAT = 3600.0


def check_workflow_id(workflow_id: object) -> str:
    """Return ``workflow_id`` if it can be stored and shown; else ``InvalidIdError``."""
    if not isinstance(workflow_id, str):
        raise InvalidIdError(
            f"workflow_id must be a str, not {type(workflow_id).__name__} ({workflow_id!r:.60}); "
            "convert it with str() if it is a number or UUID"
        )
    problem = None
    if not workflow_id:
        problem = "is empty"
    elif len(workflow_id) > MAX_ID_LENGTH:
        problem = f"is {len(workflow_id)} characters long (the limit is {MAX_ID_LENGTH})"
    elif "\0" in workflow_id:
        problem = "contains a NUL character"
    else:
        try:
            workflow_id.encode("utf-8")
        except UnicodeEncodeError:
            problem = "contains a lone surrogate (it is not valid Unicode text)"
    if problem:
        raise InvalidIdError(
            f"workflow_id {workflow_id[:60]!r} {problem}; use a non-empty text id of at most "
            f"{MAX_ID_LENGTH} characters"
        )
    return workflow_id


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

        Raises:
            WaitTimeoutError: ``timeout`` seconds passed first (the workflow keeps running).
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
        try:
            while True:
                outcome.clear()  # before the read: an outcome committed after it sets it again
                row = app._row(self.workflow_id)
                if row.status != Status.PENDING:
                    value: R = app._outcome(row)
                    return value
                journal, _ = app._parts()
                if journal.gone is not None:  # no outcome can be recorded any more: say why
                    raise JournalReadOnlyError(journal.gone)
                remaining = None if limit is None else limit - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise WaitTimeoutError(
                        f"workflow {self.workflow_id!r} is still {row.status} after {timeout} s; "
                        "it keeps running. Call result() again to keep waiting."
                    )
                # Set by its outcome here or by the commit watcher; the cap is a safety net.
                outcome.wait(1.0 if remaining is None else min(remaining, 1.0))
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
        found = self._app._journal.get_workflow(self.workflow_id) if self._app._journal else None
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


class App:
    """One journal file, its registered workflows and steps, and the threads that run them.

    Use it as a context manager (``with ld.App("jobs.db") as app:``), or call ``launch()`` and
    ``close()``. Several Apps, on the same or different files, can live in one process.

    Args:
        path: the journal file (default ``litedurable.db``), created with mode 0600.
        durability: ``"full"`` (default): ``synchronous=FULL``, every acknowledged step
            survives power loss. ``"normal"``: survives process crashes only; a power cut may
            roll back the last commits, so a step may run again or a select be re-decided.
        workers: step pool size (threads running ``go`` bodies), default 128.
        workflow_threads: how many workflow functions run at once, default 64. Waiting
            workflows give their thread back, so this bounds threads, not workflows.
        app_version: None (default): recover every pending workflow on the file, whatever
            version it records; replay's per-step check (``NonDeterminismError``) is what
            catches code that changed under a workflow. New workflows record the literal
            ``"unversioned"``. A string opts into gating: it is recorded on new workflows,
            and launch and recovery take only that version's workflows (the others are
            logged with their count and versions, left for an App of their version).
        clock: injected time (``litedurable.testing.FakeClock`` in tests).
        vfs: an apsw VFS name the journal is opened through.
        grace: seconds ``close()`` waits for running step bodies.
        busy_timeout: seconds to wait for another process's write lock.
        lease: seconds without a heartbeat after which an owner is presumed dead.
        max_recovery_attempts: recoveries without progress before a workflow is ``exhausted``.
        max_payload_bytes: largest serialized input or output accepted.
        suspend_after: seconds a workflow may block in a wait before it gives its thread back.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "litedurable.db",
        *,
        durability: Durability = "full",
        workers: int = 128,
        workflow_threads: int = 64,
        app_version: str | None = None,
        clock: Clock | None = None,
        vfs: str | None = None,
        grace: float = 5.0,
        busy_timeout: float = 5.0,
        lease: float = 10.0,
        max_recovery_attempts: int = 10,
        max_payload_bytes: int = 16 * 1024 * 1024,
        suspend_after: float = 2.0,
    ) -> None:
        if durability not in ("full", "normal"):
            raise ValueError(f"durability must be 'full' or 'normal', not {durability!r}")
        for label, number in (("workers", workers), ("workflow_threads", workflow_threads),
                              ("max_recovery_attempts", max_recovery_attempts),
                              ("max_payload_bytes", max_payload_bytes)):
            if not isinstance(number, int) or isinstance(number, bool) or number < 1:
                raise ValueError(f"{label} must be an int >= 1, got {number!r}")
        # Each of these becomes a thread's wait or a deadline: NaN or infinity would stop a
        # thread (OverflowError) or make it spin, far from where the mistake was made.
        check_seconds(grace, "App(grace=...)", maximum=MAX_SETTING)
        check_seconds(busy_timeout, "App(busy_timeout=...)", maximum=MAX_SETTING)
        check_seconds(lease, "App(lease=...)", positive=True, maximum=MAX_SETTING)
        check_seconds(suspend_after, "App(suspend_after=...)", maximum=MAX_SETTING)
        self.path = os.fspath(path)
        self.durability: Durability = durability
        self.workers = workers
        self.workflow_threads = workflow_threads
        self.clock: Clock = clock or SystemClock()
        self.vfs = vfs
        self.grace = grace
        self.busy_timeout = busy_timeout
        self.lease = float(lease)
        self._beat = min(max(MIN_BEAT, self.lease / 3), MAX_BEAT)
        self.max_recovery_attempts = max_recovery_attempts
        self.suspend_after = suspend_after
        self.hooks = Hooks()
        self.registry = Registry()
        self.codec = Codec(max_payload_bytes)
        if app_version is not None:
            _check_version(app_version)
        self._app_version = app_version
        self._journal: Journal | None = None
        self._runtime: Runtime | None = None
        self._owner = ""
        self._heartbeat_stop = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._schedules: dict[str, ScheduleRow] = {}  # declared in code; written at launch
        self._scheduler: Scheduler | None = None

    # -- registration ---------------------------------------------------------------------

    def workflow(
        self,
        name: str | None = None,
        *,
        timeout: float | timedelta | None = None,
        max_recovery_attempts: int | None = None,
        schedule: str | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Register a workflow: ``@app.workflow()`` (always with parentheses).

        Calling the decorated function starts it with a fresh id and waits for its result
        (``app.run``). Its name (default: the qualified name) is recorded in the journal.

        Args:
            timeout: seconds (or timedelta) from each start to the workflow's deadline; past
                it the workflow is cancelled with its children (``WorkflowTimedOutError``).
                ``app.start(..., timeout=...)`` overrides it per start.
            max_recovery_attempts: this workflow's recovery limit (default: the App's).
            schedule: a cron expression (5 fields, or 6 with seconds first): the workflow is
                also started at each fire time, UTC, with the fire time as first argument
                (``app.schedule`` takes a time zone and catch-up).
        """
        if callable(name):
            raise UsageError(
                f"@app.workflow is missing its parentheses on {getattr(name, '__name__', name)!r}:"
                " write @app.workflow() (or @app.workflow(name=...))"
            )
        seconds = None if timeout is None else to_seconds(timeout, "@app.workflow timeout")
        cron = None if schedule is None else Cron(schedule)  # a bad expression fails here

        def register(fn: Callable[P, R]) -> Callable[P, R]:
            definition = self.registry.add_workflow(fn, name, max_recovery_attempts, seconds)

            @functools.wraps(fn)
            def start_and_wait(*args: P.args, **kwargs: P.kwargs) -> R:
                return self.run(start_and_wait, *args, **kwargs)

            start_and_wait.__litedurable_workflow__ = definition  # type: ignore[attr-defined]
            start_and_wait.__litedurable_app__ = self  # type: ignore[attr-defined]
            if cron is not None:
                self.schedule(definition.name, start_and_wait, cron.expression)
            return start_and_wait

        return register

    def step(
        self, name: str | None = None, *, retries: Retry | None = None
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Register a step: ``@app.step()`` (always with parentheses).

        Called inside a workflow, the step is checkpointed (replay returns the recorded outcome
        without running the body); anywhere else it is a plain call.
        """
        if callable(name):
            raise UsageError(
                f"@app.step is missing its parentheses on {getattr(name, '__name__', name)!r}: "
                "write @app.step() (or @app.step(retries=ld.Retry(...)))"
            )
        if retries is not None and not isinstance(retries, Retry):
            raise UsageError(f"retries= takes an ld.Retry(...), not {type(retries).__name__}")

        def register(fn: Callable[P, R]) -> Callable[P, R]:
            definition = self.registry.add_step(fn, name, retries)

            @functools.wraps(fn)
            def checkpointed(*args: P.args, **kwargs: P.kwargs) -> R:
                scope = current()
                if isinstance(scope, WorkflowRun):
                    value: R = scope.call_step(
                        StepKind.STEP, definition.name, fn, args, kwargs, definition.retry,
                        definition.return_hint,
                    )
                    return value
                return fn(*args, **kwargs)

            checkpointed.__litedurable_step__ = definition  # type: ignore[attr-defined]
            return checkpointed

        return register

    # -- lifecycle ------------------------------------------------------------------------

    def launch(self) -> App:
        """Open the journal, start the threads, and resume the pending workflows it may run
        (all of them, or only its ``app_version``'s when one is given)."""
        with self._lock:
            if self._runtime is not None:
                raise UsageError("this App is already launched; close() it before launching again")
            self.hooks.crashed = None  # a crash simulated in an earlier launch is over
            journal = Journal(self.path, durability=self.durability,
                              busy_timeout=self.busy_timeout, vfs=self.vfs)
            try:
                owner = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
                journal.heartbeat(owner, time.time(), lease=self._stated_lease)
                version = UNVERSIONED if self._app_version is None else self._app_version
                runtime = Runtime(
                    journal=journal, codec=self.codec, clock=self.clock, registry=self.registry,
                    owner=owner, app_version=version, workers=self.workers,
                    workflow_threads=self.workflow_threads, suspend_after=self.suspend_after,
                    hooks=self.hooks,
                )
            except BaseException:
                journal.close()
                raise
            self._journal, self._runtime, self._owner = journal, runtime, owner
            _LIVE_OWNERS.add(owner)
        others = {v: n for v, n in journal.pending_by_version().items() if v != version}
        if others and self._app_version is not None:  # unversioned Apps recover them all
            log.warning(
                "litedurable: %d pending workflow(s) belong to other app versions (%s); this App "
                "is version %s and leaves them for an App of their version",
                sum(others.values()), ", ".join(f"{v}: {n}" for v, n in sorted(others.items())),
                version)
        self.recover()
        now = self.clock.now()
        for spec in list(self._schedules.values()):
            journal.upsert_schedule(spec, now)
        self._scheduler = Scheduler(journal, self.clock, self.registry.workflows.__contains__,
                                    self._fire)
        self._heartbeat_stop.clear()
        self._heartbeat_thread = threading.Thread(
            target=self._heartbeat_loop, name="litedurable-heartbeat", daemon=True
        )
        self._heartbeat_thread.start()
        return self

    def close(self) -> None:
        """Stop every thread this App started and close the journal.

        Workflows waiting in ``sleep``/``select`` stay pending for the next launch; running step
        bodies get ``grace`` seconds. Nothing is written after this returns.
        """
        with self._lock:
            runtime, journal = self._runtime, self._journal
            self._runtime = self._journal = None
        if runtime is None or journal is None:
            return
        if self._scheduler is not None:
            self._scheduler.stop()
            self._scheduler = None
        self._heartbeat_stop.set()
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join()
        stuck = runtime.shutdown(self.grace)
        if stuck:
            log.warning("litedurable: step bodies still running after the %.1f s grace period "
                        "(%s); their results will not be recorded", self.grace, ", ".join(stuck))
        if not journal.frozen:
            try:
                journal.release(self._owner)  # the next launch takes these over at once
            except Exception as exc:
                log.warning("litedurable: could not release ownership on close: %s", exc)
        journal.close()
        _LIVE_OWNERS.discard(self._owner)

    def __enter__(self) -> App:
        return self.launch()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _parts(self) -> tuple[Journal, Runtime]:
        runtime, journal = self._runtime, self._journal
        if runtime is None or journal is None:
            raise AppClosedError(
                f"the App on {self.path} is not launched: use `with app:` or call app.launch() "
                "first"
            )
        return journal, runtime

    def _simulate_crash(self, crash: Callable[[], BaseException]) -> None:
        """Freeze the journal as if the process died now (``litedurable.testing`` uses this)."""
        journal = self._journal
        if journal is not None:
            journal.freeze(crash)
        _LIVE_OWNERS.discard(self._owner)

    # -- recovery -------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Claim pending workflows whose owner is gone (of this ``app_version`` if one was
        given, and only of workflow names registered here), and resume them.

        ``launch()`` calls this, and the heartbeat thread calls it every ``lease`` seconds so a
        dead process's workflows are taken over. Returns the ids claimed.
        """
        journal, runtime = self._parts()
        owners = journal.owners()
        now = time.time()
        namespace = pid_namespace()
        verdicts: dict[str | None, bool] = {}  # per owner: a thousand workflows, one kill(0)

        def gone(owner: str | None) -> bool:
            if owner not in verdicts:
                verdicts[owner] = presumed_dead(owner)
            return verdicts[owner]

        def presumed_dead(owner: str | None) -> bool:
            if owner is None:
                return True
            if owner in _LIVE_OWNERS:
                return False
            row = owners.get(owner)
            if row is None or now - row.heartbeat > self._lease_of(row):
                return True
            # The heartbeat is fresh. Only a pid check that can be trusted may still prove the
            # owner dead: one in the owner's own pid namespace on this host. Elsewhere (another
            # container sharing host name and volume, an old row that does not say) the pid
            # means nothing here, and the lease alone decides.
            if row.host != HOST or row.pid_namespace is None or row.pid_namespace != namespace:
                return False
            return row.pid == os.getpid() or not _pid_alive(row.pid)

        pending = journal.pending(self._app_version)
        names = {wid: name for wid, name, _ in pending}
        # Ours but not running means its run stopped without recording an outcome (a journal
        # error, say): claiming it from ourselves counts the attempt like any recovery, so a
        # run that fails the same way every time ends `exhausted` instead of looping. Only
        # workflows this App can run: without version gating, another program's workflows on
        # the same file are pending too, and claiming them would strand them.
        claims = [(wid, owner) for wid, name, owner in pending
                  if name in self.registry.workflows
                  and ((owner == self._owner and not runtime.is_active(wid))
                       or (owner != self._owner and gone(owner)))]
        dead = sorted({o for _, o in claims if o is not None and o != self._owner and o in owners})
        taken = journal.claim(claims, self._owner, forget=dead) if claims else {}
        if taken:
            self.hooks.fire("recovery", workflow_ids=sorted(taken))
        for wid, attempts in taken.items():
            definition = self.registry.workflows.get(names[wid])
            limit = (definition.max_recovery_attempts if definition is not None
                     and definition.max_recovery_attempts is not None
                     else self.max_recovery_attempts)
            if attempts > limit:
                error = WorkflowExhaustedError(
                    f"workflow {wid!r} was recovered {attempts - 1} times without recording a "
                    f"new step (limit {limit}); it is parked in status 'exhausted'. Fix the "
                    "cause, then app.resume(id)."
                )
                runtime.finish(wid, Status.EXHAUSTED, Outcome(error=error))
            else:
                runtime.schedule(wid)
        return sorted(taken)

    @property
    def _stated_lease(self) -> float:
        """The lease written in this App's owner row: ``lease``, or three beats if longer."""
        return max(self.lease, 3 * self._beat)

    def _lease_of(self, row: OwnerRow) -> float:
        """How long ``row``'s owner may stay silent: the lease it stated, if it stated a usable
        one (rows written before schema 3 did not), else this App's."""
        lease = row.lease
        if lease is None or not math.isfinite(lease) or lease <= 0:  # not one an App states
            return self.lease
        return lease

    def _heartbeat_loop(self) -> None:
        beat = self._beat
        last_recovery = time.monotonic()
        while not self._heartbeat_stop.wait(beat):
            try:
                journal, _ = self._parts()
                journal.heartbeat(self._owner, time.time(), lease=self._stated_lease)
                if time.monotonic() - last_recovery >= self.lease:
                    last_recovery = time.monotonic()
                    self.recover()
                    if self._scheduler is not None:
                        self._scheduler.poke()  # see schedules other processes changed
            except AppClosedError:
                return
            except BaseException as exc:
                if self._journal is not None and self._journal.frozen:
                    return
                log.warning("litedurable: heartbeat failed: %s", exc)

    # -- starting -------------------------------------------------------------------------

    def _definition(self, wf: Callable[..., Any]) -> WorkflowDef:
        definition = getattr(wf, "__litedurable_workflow__", None)
        if not isinstance(definition, WorkflowDef):
            raise UsageError(
                f"{getattr(wf, '__qualname__', wf)!r} is not a workflow: decorate it with "
                "@app.workflow() before starting it"
            )
        if self.registry.workflows.get(definition.name) is not definition:
            raise UsageError(
                f"workflow {definition.name!r} is registered on another App; start it with "
                "that App, or register it on this one"
            )
        return definition

    # The overloads exist for static checkers: a ParamSpec cannot be extended with keyword
    # parameters (PEP 612), so a call passing workflow_id=, timeout= or detached= is matched
    # by a signature that checks the return type but not the workflow's own arguments; a call
    # without them falls through to the last one, checked against the workflow's signature.
    @overload
    def start(self, wf: Callable[..., R], *args: Any, workflow_id: str | None,
              timeout: float | timedelta | None = None, detached: bool = False,
              **kwargs: Any) -> Handle[R]: ...

    @overload
    def start(self, wf: Callable[..., R], *args: Any, timeout: float | timedelta | None,
              detached: bool = False, **kwargs: Any) -> Handle[R]: ...

    @overload
    def start(self, wf: Callable[..., R], *args: Any, detached: bool,
              **kwargs: Any) -> Handle[R]: ...

    @overload
    def start(self, wf: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> Handle[R]: ...

    def start(self, wf: Callable[..., R], *args: Any, **kwargs: Any) -> Handle[R]:
        """Start ``wf(*args, **kwargs)`` durably and return its handle at once.

        Keywords consumed here, not passed to ``wf``:

        * ``workflow_id=``: makes the start idempotent: starting an existing id returns its
          handle without comparing arguments.
        * ``timeout=``: seconds (or timedelta) to the workflow's deadline, overriding
          ``@app.workflow(timeout=)``. The deadline is stored; past it the workflow is
          cancelled with its children, even if the process was down meanwhile.
        * ``detached=True`` (inside a workflow only): the child is not cancelled with its
          parent and does not inherit its deadline.

        Inside a workflow this starts a **child**: a recorded step whose default id is
        ``"<parent id>/<step>"``, returning a ``ChildHandle`` (a durable future). Children
        inherit their parent's deadline unless detached.

        Raises:
            WorkflowConflictError: the id belongs to a workflow of another name.
            SerializationError: an argument cannot be stored (nothing was written).
            InvalidIdError: the id is not a non-empty storable string.
        """
        workflow_id: object = kwargs.pop("workflow_id", None)
        timeout: object = kwargs.pop("timeout", None)
        detached: object = kwargs.pop("detached", False)
        definition = self._definition(wf)
        seconds = definition.timeout
        if timeout is not None:
            seconds = to_seconds(timeout, "timeout")  # type: ignore[arg-type]
        if not isinstance(detached, bool):
            raise UsageError(f"detached= takes True or False, not {detached!r}")
        scope = current()
        if isinstance(scope, WorkflowRun):
            return self._start_child(scope, definition, args, kwargs, workflow_id, seconds,
                                     detached)
        if detached:
            raise UsageError(
                "detached=True only applies to a child workflow (app.start inside a workflow); "
                "a workflow started from outside has no parent to detach from"
            )
        self._parts()  # refuse before encoding anything when the App is not launched
        wid = str(uuid.uuid4()) if workflow_id is None else check_workflow_id(workflow_id)
        deadline = None if seconds is None else self.clock.now() + seconds
        row = self._insert(definition, wid, args, kwargs, deadline=deadline)
        if row.name != definition.name:
            raise _conflict(wid, row, definition)
        return Handle(self, wid)

    def _check_runtime(self, run: WorkflowRun, what: str) -> None:
        """Refuse a workflow of another App acting on this one's workflows."""
        if run.runtime is not self._runtime and not run.replay_only:
            raise UsageError(
                f"workflow {run.workflow_id!r} {what} through another App; a workflow may only "
                "start, wait on and cancel workflows of the App that runs it"
            )

    def _insert(
        self,
        definition: WorkflowDef,
        workflow_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        *,
        deadline: float | None,
        parent_id: str | None = None,
        detached: bool = False,
    ) -> WorkflowRow:
        """Create the workflow and schedule it here, unless the id exists; its row either way."""
        journal, runtime = self._parts()
        inputs = self.codec.encode_args(
            definition.fn, args, kwargs, f"the arguments of workflow {definition.name!r}"
        )
        created, row = journal.insert_workflow(
            workflow_id=workflow_id, name=definition.name, inputs=inputs, now=self.clock.now(),
            app_version=runtime.app_version, parent_id=parent_id, owner=self._owner,
            deadline=deadline, detached=detached,
        )
        if created:
            runtime.schedule(workflow_id, row)
        return row

    def _start_child(
        self,
        run: WorkflowRun,
        definition: WorkflowDef,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        workflow_id: object,
        timeout: float | None,
        detached: bool,
    ) -> ChildHandle[Any]:
        """Start a child workflow as step ``child`` of ``run`` (replayed: the recorded id)."""
        self._check_runtime(run, f"starts a {definition.name!r} child")
        if workflow_id is not None and workflow_id in (run.workflow_id, run.row.parent_id):
            whose = "its own" if workflow_id == run.workflow_id else "its parent's"
            raise UsageError(
                f"workflow {run.workflow_id!r} starts a {definition.name!r} child with {whose} "
                f"id {workflow_id!r}: the two would wait on each other forever. Give the child "
                "another workflow_id= (or none: the default is derived from the parent's)."
            )
        runtime = run.runtime
        step, recorded = run.take(StepKind.CHILD, definition.name)
        if recorded is not None:
            child_id = runtime.replay(recorded, str).get()
            return ChildHandle(self, run, step, child_id, definition.return_hint)
        child_id = check_workflow_id(
            f"{run.workflow_id}/{step}" if workflow_id is None else workflow_id
        )
        now = self.clock.now()
        limits = [] if detached or run.row.deadline is None else [run.row.deadline]
        if timeout is not None:
            limits.append(now + timeout)
        try:
            row = self._insert(definition, child_id, args, kwargs,
                               deadline=min(limits, default=None), parent_id=run.workflow_id,
                               detached=detached)
            conflict = None if row.name == definition.name else _conflict(child_id, row, definition)
            runtime.record(run, step, StepKind.CHILD, definition.name, child_id, str,
                           error=conflict)
        except BaseException as exc:
            raise run.guard(exc) from None
        if conflict is not None:
            raise conflict
        return ChildHandle(self, run, step, child_id, definition.return_hint)

    @overload
    def run(self, wf: Callable[..., R], *args: Any, workflow_id: str | None,
            timeout: float | timedelta | None = None, **kwargs: Any) -> R: ...

    @overload
    def run(self, wf: Callable[..., R], *args: Any, timeout: float | timedelta | None,
            **kwargs: Any) -> R: ...

    @overload
    def run(self, wf: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R: ...

    def run(self, wf: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """``start(...)`` then ``result()``: run a workflow to its end and return its value.

        Takes ``workflow_id=`` and ``timeout=`` like ``start`` (the overloads: see there).
        """
        handle: Handle[R] = self.start(wf, *args, **kwargs)
        return handle.result()

    def handle(self, workflow_id: str) -> Handle[Any]:
        """The handle of an existing workflow (``WorkflowNotFoundError`` if there is none)."""
        self._row(check_workflow_id(workflow_id))
        return Handle(self, workflow_id)

    # -- reading --------------------------------------------------------------------------

    def _row(self, workflow_id: str) -> WorkflowRow:
        journal, _ = self._parts()
        row = journal.get_workflow(workflow_id)
        if row is None:
            raise WorkflowNotFoundError(
                f"no workflow with id {workflow_id!r} in {self.path}; check the id (list them "
                "with app.list_workflows() or `litedurable list`)"
            )
        return row

    def _outcome(self, row: WorkflowRow) -> Any:
        status = Status(row.status)
        if status == Status.SUCCEEDED:
            assert row.output is not None
            what = f"the result of workflow {row.workflow_id!r}"
            return self.codec.decode(row.output, self._hint(row), what)
        if row.error is None:  # cancelled by a litedurable too old to record why
            raise WorkflowCancelledError(f"workflow {row.workflow_id!r} was cancelled")
        raise self.codec.decode_error(row.error)

    def _hint(self, row: WorkflowRow | None) -> Any:
        """The declared return type of ``row``'s workflow, if registered here."""
        definition = None if row is None else self.registry.workflows.get(row.name)
        return Any if definition is None else definition.return_hint

    def list_workflows(
        self,
        *,
        status: Status | str | None = None,
        name: str | None = None,
        app_version: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[WorkflowInfo]:
        """Workflows matching the filters, newest first."""
        journal, _ = self._parts()
        rows = journal.list_workflows(
            status=None if status is None else Status(status).value, name=name,
            app_version=app_version, limit=limit, offset=offset,
        )
        return [workflow_info(row, self.codec) for row in rows]

    def steps(self, workflow_id: str) -> list[StepInfo]:
        """The workflow's journal rows in step order."""
        self._row(workflow_id)
        journal, _ = self._parts()
        return [step_info(row, self.codec) for row in journal.load_steps(workflow_id)]

    # -- management -----------------------------------------------------------------------

    def cancel(self, workflow_id: str) -> bool:
        """Cancel a pending workflow and its pending non-detached children (from any process).

        The status becomes ``cancelled`` at once. A run in this process stops at its next
        journaled call or wait, and running steps see ``ld.cancelled()``; a run in another
        process gets the same within a few milliseconds (its commit watcher sees the change).
        Steps that still return a value are recorded; steps interrupted by the cancellation
        are not, so ``resume`` runs them again. Finished workflows are left as they are.
        Returns True if ``workflow_id`` was pending.
        """
        _, runtime = self._parts()
        self._row(workflow_id)
        done = runtime.cancel(
            workflow_id, WorkflowCancelledError(f"workflow {workflow_id!r} was cancelled")
        )
        return workflow_id in done

    def resume(self, workflow_id: str, *, app_version: str | None = None) -> Handle[Any]:
        """Run a cancelled, failed, exhausted or nondeterministic workflow again from its journal.

        Recorded steps replay; the run continues live from the first unrecorded step. The
        children its cancellation reached are resumed too. A resumed workflow has no deadline
        (resuming is how a timed-out workflow is given more time). A succeeded workflow is
        left alone; so is a pending one, unless ``app_version`` moves it.

        Args:
            app_version: move the workflow (and the children resumed with it) to this version,
                e.g. to let a gated App of a new version take over a workflow another version
                left pending. A version this App does not run (it is gated to another one) is
                left pending for an App of that version instead of running here.
        """
        journal, runtime = self._parts()
        row = self._row(workflow_id)
        if app_version is not None:
            _check_version(app_version)
        here = self._runs_version(row.app_version if app_version is None else app_version)
        resumed = journal.resume(workflow_id, self.clock.now(), owner=self._owner if here else None,
                                 app_version=app_version)
        if here:
            for wid in resumed:
                runtime.resume_local(wid)
            if not resumed and row.status == Status.PENDING and app_version is not None:
                self.recover()  # an orphan this App may now take
        return Handle(self, workflow_id)

    def _runs_version(self, app_version: str) -> bool:
        """Whether this App runs (and recovers) workflows recording ``app_version``."""
        return self._app_version is None or app_version == self._app_version

    def fork(
        self,
        workflow_id: str,
        from_step: int,
        *,
        new_id: str | None = None,
        app_version: str | None = None,
    ) -> Handle[Any]:
        """A new workflow with ``workflow_id``'s inputs and journal rows below ``from_step``.

        The fork replays those rows (select decisions included) and runs live from
        ``from_step``. It records ``app_version`` (default: this App's version); a version a
        gated App does not run is left pending for an App of that version.
        """
        journal, runtime = self._parts()
        row = self._row(workflow_id)
        if not isinstance(from_step, int) or from_step < 0:
            raise ValueError(f"from_step must be an int >= 0, got {from_step!r}")
        version = runtime.app_version if app_version is None else _check_version(app_version)
        target = check_workflow_id(new_id) if new_id is not None else str(uuid.uuid4())
        here = self._runs_version(version)
        journal.fork(row, target, from_step, now=self.clock.now(),
                     app_version=version, owner=self._owner if here else None)
        if here:
            runtime.schedule(target)
        return Handle(self, target)

    def gc(self, older_than: float | timedelta) -> int:
        """Delete finished workflows not updated for ``older_than``; returns how many."""
        journal, _ = self._parts()
        return journal.delete_finished(self.clock.now() - to_seconds(older_than, "older_than"))

    # -- schedules ------------------------------------------------------------------------

    def schedule(
        self,
        name: str,
        wf: Callable[..., Any],
        cron: str,
        *,
        tz: str | None = None,
        catch_up: bool = False,
    ) -> None:
        """Start ``wf(fire_time)`` at every fire time of ``cron``, exactly once per firing.

        ``cron`` has 5 fields, or 6 with seconds first (``"*/15 * * * * *"``); ``tz`` is an
        IANA zone (default UTC). The workflow receives the fire time, an aware datetime, as its
        first argument; the firing's id is ``f"{name}@{fire_time.isoformat()}"``, so several
        processes on one file start each firing once. Firings missed while no process ran are
        skipped, or started (at most ``CATCH_UP_LIMIT``, the latest) with ``catch_up=True``.
        The schedule is stored in the journal (it survives restarts) when the App launches, or
        at once if it is running; calling this again updates it but keeps it paused if it was.

        Raises:
            ValueError: a bad cron expression or time zone (said here, not at the first tick).
            UsageError: ``wf`` is not a workflow of this App, or cannot take a fire time.
        """
        definition = self._definition(wf)
        if not isinstance(name, str) or not name:
            raise UsageError(f"a schedule name is a non-empty str, not {name!r}")
        check_workflow_id(f"{name}@0000-00-00T00:00:00+00:00")  # its firing ids must be valid
        spec = Cron(cron, tz)
        try:
            inspect.signature(definition.fn).bind(datetime.now(UTC))
        except TypeError:
            raise UsageError(
                f"workflow {definition.name!r} cannot be scheduled: it must accept the fire time "
                "(an aware datetime) as its only required argument"
            ) from None
        row = ScheduleRow(name, definition.name, spec.expression, tz, bool(catch_up), False, None)
        with self._lock:
            self._schedules[name] = row
            journal = self._journal
        if journal is not None:
            journal.upsert_schedule(row, self.clock.now())
            self._poke_scheduler()

    def list_schedules(self) -> list[ScheduleInfo]:
        """Every schedule in the journal (from any process), by name."""
        journal, _ = self._parts()
        now = self.clock.now()
        infos = []
        for row in journal.schedules():
            cron = Cron(row.cron, row.tz)
            infos.append(ScheduleInfo(
                name=row.name, workflow=row.workflow, cron=row.cron, tz=row.tz,
                catch_up=row.catch_up, paused=row.paused,
                last_fire=None if row.last_fire is None else
                datetime.fromtimestamp(row.last_fire, cron.zone),
                next_fire=None if row.paused else cron.after(now),
            ))
        return infos

    def pause_schedule(self, name: str) -> None:
        """Stop starting firings of schedule ``name`` (every process) until resumed."""
        self._set_paused(name, True)

    def resume_schedule(self, name: str) -> None:
        """Start firings of schedule ``name`` again, from now on (paused ones are not made up)."""
        self._set_paused(name, False)

    def remove_schedule(self, name: str) -> None:
        """Delete schedule ``name``; firings already started are not affected."""
        journal, _ = self._parts()
        with self._lock:
            self._schedules.pop(name, None)
        if not journal.delete_schedule(name):
            raise self._no_schedule(name)
        self._poke_scheduler()

    def _set_paused(self, name: str, paused: bool) -> None:
        journal, _ = self._parts()
        if not journal.pause_schedule(name, paused, self.clock.now()):
            raise self._no_schedule(name)
        self._poke_scheduler()

    def _no_schedule(self, name: str) -> ScheduleNotFoundError:
        return ScheduleNotFoundError(
            f"no schedule named {name!r} in {self.path}; list them with app.list_schedules()"
        )

    def _poke_scheduler(self) -> None:
        scheduler = self._scheduler
        if scheduler is not None:
            scheduler.poke()

    def _fire(self, row: ScheduleRow, fire: datetime) -> None:
        """Start one firing of a schedule (a no-op if any process already did)."""
        journal, _ = self._parts()
        definition = self.registry.workflows[row.workflow]
        deadline = None if definition.timeout is None else self.clock.now() + definition.timeout
        self._insert(definition, f"{row.name}@{fire.isoformat()}", (fire,), {},
                     deadline=deadline)
        journal.schedule_fired(row.name, fire.timestamp())


def _check_version(app_version: object) -> str:
    """Return ``app_version`` if it can be stored and shown; else ``UsageError``."""
    if (not isinstance(app_version, str) or not app_version or "\0" in app_version
            or not app_version.encode("utf-8", "surrogatepass").decode("utf-8", "ignore")
            == app_version):  # a lone surrogate cannot be stored as text
        raise UsageError(
            "app_version must be a non-empty str of valid text without NUL characters, not "
            f"{app_version!r:.80}; pass a label such as app_version=\"v7\", or None to "
            "recover every version"
        )
    return app_version


def _conflict(workflow_id: str, row: WorkflowRow, definition: WorkflowDef) -> WorkflowConflictError:
    return WorkflowConflictError(
        f"workflow id {workflow_id!r} already belongs to a {row.name!r} workflow, not "
        f"{definition.name!r}; use another id"
    )


def replay_check(app: App, journal: Journal, row: WorkflowRow) -> str | None:
    """Replay one recorded workflow against ``app``'s code without running or writing anything.

    Returns None when the code reproduces the journal (up to its last recorded step), else a
    description of the first difference.
    """
    definition = app.registry.workflows.get(row.name)
    if definition is None:
        return f"workflow {row.name!r} is not registered on this App"
    return replay_journal(journal, app.codec, app.clock, app.registry, row)


def workflow_info(row: WorkflowRow, codec: Codec) -> WorkflowInfo:
    """A journal workflow row as the public record."""
    return WorkflowInfo(
        workflow_id=row.workflow_id, name=row.name, status=Status(row.status),
        created_at=to_datetime(row.created_at), updated_at=to_datetime(row.updated_at),
        app_version=row.app_version, parent_id=row.parent_id, owner=row.owner,
        recovery_attempts=row.recovery_attempts,
        error=None if row.error is None else codec.error_summary(row.error),
    )


def step_info(row: StepRow, codec: Codec) -> StepInfo:
    """A journal step row as the public record (output as plain JSON, tags made readable)."""
    extra = json.loads(row.extra) if row.extra else {}
    return StepInfo(
        workflow_id=row.workflow_id, step=row.step, kind=row.kind, name=row.name,
        output=None if row.output is None else codec.display(row.output),
        error=None if row.error is None else codec.error_summary(row.error),
        started_at=to_datetime(row.started_at),
        finished_at=None if row.finished_at is None else to_datetime(row.finished_at),
        candidates=extra.get("candidates"), winner=extra.get("winner"),
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
