"""The hub: ``App`` registers workflows and steps, owns the storage, the lease and the
runtime of a launch, and starts, recovers, lists, cancels, resumes and forks workflows.

The App holds no engine logic of its own: ownership is ``_lease``, running is ``_runtime``,
children are ``_children``, handles are ``_handle``, storage is behind ``_storage.Storage``.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from . import _messages as messages
from ._backends import open_storage, shown_location
from ._children import start_child
from ._clock import Clock, SystemClock
from ._codec import Codec
from ._context import current
from ._cron import Cron
from ._errors import (
    AppClosedError,
    QueueDeduplicatedError,
    ScheduleNotFoundError,
    UsageError,
    WorkflowCancelledError,
    WorkflowConflictError,
    WorkflowExhaustedError,
    WorkflowNotFoundError,
)
from ._faults import Faults
from ._handle import ChildHandle, Handle
from ._lease import Lease
from ._queues import Dequeuer, Queue, queue_spec
from ._records import queue_info, schedule_info, step_info, workflow_info
from ._registry import ENQUEUE_KEYWORDS, Registry, WorkflowDef, enqueue_keyword_clash
from ._replay import replay_offline
from ._run import WorkflowRun
from ._runtime import Runtime
from ._scheduler import Scheduler, schedule_row
from ._steps import Outcome
from ._storage import (
    Deduplicated,
    Durability,
    ParentNotPending,
    QueueEntry,
    QueueSpec,
    ScheduleRow,
    Storage,
    WorkflowRow,
)
from ._telemetry import Tracer, check_tracing
from ._types import (
    QueueInfo,
    Retry,
    ScheduleInfo,
    Status,
    StepInfo,
    StepKind,
    WorkflowInfo,
    check_seconds,
    check_workflow_id,
    to_seconds,
)

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = ["App"]

log = logging.getLogger("litedurable")

P = ParamSpec("P")
R = TypeVar("R")

MAX_SETTING = 1e6
"""The largest duration setting of an App, in seconds (about 11.5 days): each one becomes a
thread's wait or join, which no platform accepts past ``threading.TIMEOUT_MAX``."""

UNVERSIONED = "unversioned"
"""The version recorded on workflows started by an App without ``app_version=``."""

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
        tracing: OpenTelemetry spans (needs ``pip install 'litedurable[otel]'``): False
            (default) makes none; True makes a span per workflow run and per step execution
            through the global ``TracerProvider``; a ``TracerProvider`` makes them through
            that one. The spans and their attributes are described in the README (Tracing).
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
        tracing: bool | TracerProvider = False,
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
        check_tracing(tracing)
        self.path = os.fspath(path)
        self.durability: Durability = durability
        self.workers = workers
        self.workflow_threads = workflow_threads
        self.clock: Clock = clock or SystemClock()
        self.vfs = vfs
        self.grace = grace
        self.busy_timeout = busy_timeout
        self.lease = float(lease)
        self.max_recovery_attempts = max_recovery_attempts
        self.suspend_after = suspend_after
        self.tracing = tracing
        self.faults = Faults()
        self.registry = Registry()
        self.codec = Codec(max_payload_bytes)
        if app_version is not None:
            _check_version(app_version)
        self._app_version = app_version
        self._storage: Storage | None = None
        self._runtime: Runtime | None = None
        self._lease: Lease | None = None
        self._lock = threading.Lock()
        # One recovery at a time: launch's, the heartbeat's (once per lease) and a resume's.
        # The heartbeat starts before launch recovers, and two recoveries at once each took
        # the other's fresh claims (ours, not yet running) for stopped runs and claimed them
        # again, counting a recovery attempt that never happened.
        self._recovering = threading.Lock()
        self._schedules: dict[str, ScheduleRow] = {}  # declared in code; written at launch
        self._scheduler: Scheduler | None = None
        self._queues: dict[str, QueueSpec] = {}  # declared in code; consumed once launched
        self._dequeuer: Dequeuer | None = None
        self._serving = threading.Event()  # set by close(): a serve() returns

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
            self.faults.revive()  # a crash simulated in an earlier launch is over
            self._serving.clear()  # a serve() of this launch waits for its close()
            storage = open_storage(self.path, durability=self.durability,
                                   busy_timeout=self.busy_timeout, vfs=self.vfs,
                                   faults=self.faults)
            try:
                lease = Lease(storage, self.lease, self.faults)
                lease.heartbeat()  # the owner row exists before any workflow names the owner
                version = UNVERSIONED if self._app_version is None else self._app_version
                runtime = Runtime(
                    storage=storage, codec=self.codec, clock=self.clock, registry=self.registry,
                    owner=lease.owner, app_version=version, workers=self.workers,
                    workflow_threads=self.workflow_threads, suspend_after=self.suspend_after,
                    faults=self.faults,
                    tracer=Tracer(self.tracing, lease.owner) if self.tracing else None,
                    journal_failed=lease.hurry,
                )
            except BaseException:
                storage.close()
                raise
            self._storage, self._runtime, self._lease = storage, runtime, lease
        others = {v: n for v, n in storage.pending_by_version().items() if v != version}
        if others and self._app_version is not None:  # unversioned Apps recover them all
            log.warning(
                "litedurable: %d pending workflow(s) belong to other app versions (%s); this App "
                "is version %s and leaves them for an App of their version",
                sum(others.values()), ", ".join(f"{v}: {n}" for v, n in sorted(others.items())),
                version)
        lease.start(self._every_lease)
        self.recover()
        now = self.clock.now()
        for spec in list(self._schedules.values()):
            storage.upsert_schedule(spec, now)
        self._scheduler = Scheduler(storage, self.clock, self.registry.workflows.__contains__,
                                    self._fire, self.faults)
        with self._lock:
            queues = list(self._queues.values())
        for queue in queues:
            self._consume(queue)
        return self

    def close(self) -> None:
        """Stop every thread this App started and close the journal.

        Workflows waiting in ``sleep``/``select`` stay pending for the next launch; running step
        bodies get ``grace`` seconds. Nothing is written after this returns.
        """
        with self._lock:
            runtime, storage, lease = self._runtime, self._storage, self._lease
            if runtime is not None:
                # Closing before the parts are let go: a run that now acts on workflows through
                # this App (which no longer answers) unwinds and stays pending (``_parts``,
                # ``_check_runtime``), instead of raising into its code and being recorded as
                # failed; the step it ran may have finished in the grace period.
                runtime.begin_close()
            self._runtime = self._storage = self._lease = None
        if runtime is None or storage is None or lease is None:
            return
        if self._scheduler is not None:
            self._scheduler.stop()
            self._scheduler = None
        with self._lock:
            dequeuer, self._dequeuer = self._dequeuer, None
        if dequeuer is not None:
            dequeuer.stop()
        self._serving.set()
        lease.stop()
        stuck = runtime.shutdown(self.grace)
        if stuck:
            log.warning("litedurable: step bodies still running after the %.1f s grace period "
                        "(%s); their results will not be recorded", self.grace, ", ".join(stuck))
        if not self.faults.dead:
            try:
                storage.release(lease.owner)  # the next launch takes these over at once
            except Exception as exc:
                log.warning("litedurable: could not release ownership on close: %s", exc)
        storage.close()
        lease.end()

    def __enter__(self) -> App:
        return self.launch()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _parts(self) -> tuple[Storage, Runtime]:
        runtime, storage = self._runtime, self._storage
        if runtime is None or storage is None:
            scope = current()
            if isinstance(scope, WorkflowRun):
                scope.check_interrupts()  # a run of this App, closing: it unwinds, pending
            raise AppClosedError(
                f"the App on {shown_location(self.path)} is not launched: use `with app:` or "
                "call app.launch() first"
            )
        return storage, runtime

    @property
    def _owner(self) -> str:
        lease = self._lease
        return "" if lease is None else lease.owner

    def _simulate_crash(self, crash: Callable[[], BaseException]) -> None:
        """Kill the App as if the process died now (``litedurable.testing`` uses this)."""
        self.faults.kill(crash)
        lease = self._lease
        if lease is not None:
            lease.end()

    def _every_lease(self) -> int:
        """Once per lease (or hurried), on the heartbeat thread: take over dead owners' and
        stopped workflows, and let the scheduler see schedules other processes changed.
        Returns the highest recovery attempt count claimed (0: none), which paces hurries."""
        with self._recovering:
            taken = self._recover()
        if self._scheduler is not None:
            self._scheduler.poke()
        return max(taken.values(), default=0)

    # -- recovery -------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Claim pending workflows whose owner is gone (of this ``app_version`` if one was
        given, and only of workflow names registered here), and resume them.

        ``launch()`` calls this, and the heartbeat thread calls it every ``lease`` seconds so a
        dead process's workflows are taken over. Returns the ids claimed.
        """
        with self._recovering:
            return sorted(self._recover())

    def _recover(self) -> dict[str, int]:
        storage, runtime = self._parts()
        lease = self._lease
        assert lease is not None
        pending = storage.pending(self._app_version)
        names = {wid: name for wid, name, _ in pending}
        holders = {wid: holder for wid, _, holder in pending}
        taken = lease.claim(pending, self.registry.workflows.__contains__, runtime.is_active)
        if taken:
            self.faults.fire("recovery", workflow_ids=sorted(taken))
        claimed: list[str] = []
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
                claimed.append(wid)
        # A dead consumer's queued workflows go back to their queue, to be dequeued within
        # its limits (this App's worker_concurrency too); the others run here now. Never our
        # own: one our consumer has just dequeued is not active here until it hands it to
        # the runtime, and putting it back would let a second consumer run it beside ours.
        theirs = [wid for wid in claimed if holders[wid] != lease.owner]
        requeued = set(storage.requeue(theirs, lease.owner, self.clock.now()))
        for wid in claimed:
            if wid not in requeued:
                runtime.enqueue(wid)
        if requeued:
            self._poke_consumer()
        return taken

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
        return self._begin(wf, args, kwargs, kwargs.pop("workflow_id", None))

    def _begin(self, wf: Callable[..., R], args: Sequence[Any], kwargs: dict[str, Any],
               workflow_id: object,
               place: Callable[[float | None], QueueEntry] | None = None) -> Handle[R]:
        """``start``, or with ``place`` an enqueue: ``place(timeout)`` is the queue entry."""
        timeout: object = kwargs.pop("timeout", None)
        detached: object = kwargs.pop("detached", False)
        definition = self._definition(wf)
        seconds = definition.timeout
        if timeout is not None:
            seconds = to_seconds(timeout, "timeout")  # type: ignore[arg-type]
        if not isinstance(detached, bool):
            raise UsageError(f"detached= takes True or False, not {detached!r}")
        entry = None if place is None else place(seconds)
        scope = current()
        if isinstance(scope, WorkflowRun):
            return self._start_child(scope, definition, args, kwargs, workflow_id, seconds,
                                     detached, entry)
        if detached:
            raise UsageError(
                "detached=True only applies to a child workflow (app.start inside a workflow); "
                "a workflow started from outside has no parent to detach from"
            )
        self._parts()  # refuse before encoding anything when the App is not launched
        wid = str(uuid.uuid4()) if workflow_id is None else check_workflow_id(workflow_id)
        # A queued workflow's timeout counts from its dequeue (its entry carries it).
        deadline = None if seconds is None or entry is not None else self.clock.now() + seconds
        row = self._insert(definition, wid, args, kwargs, deadline=deadline, queue=entry)
        if row.name != definition.name:
            raise _conflict(wid, row, definition)
        return Handle(self, wid)

    def _check_runtime(self, run: WorkflowRun, what: str) -> None:
        """Refuse a workflow of another App acting on this one's workflows."""
        if run.runtime is not self._runtime and not run.replay_only:
            run.check_interrupts()  # a run of this App, closing: it unwinds, pending
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
        queue: QueueEntry | None = None,
    ) -> WorkflowRow:
        """Create the workflow and schedule it here (or enqueue it, with ``queue``), unless
        the id exists; its row either way."""
        storage, runtime = self._parts()
        inputs = self.codec.encode_args(
            definition.fn, args, kwargs, f"the arguments of workflow {definition.name!r}"
        )
        try:
            created, row = storage.insert_workflow(
                workflow_id=workflow_id, name=definition.name, inputs=inputs,
                now=self.clock.now(), app_version=runtime.app_version, parent_id=parent_id,
                owner=self._owner, deadline=deadline, detached=detached, queue=queue,
            )
        except ParentNotPending as refused:  # the parent ended meanwhile: it stops here too
            raise WorkflowCancelledError(
                f"workflow {parent_id!r} is {refused.parent.status}; it cannot start child "
                f"{workflow_id!r}"
            ) from None
        except Deduplicated as held:
            assert queue is not None
            raise QueueDeduplicatedError(
                f"queue {queue.queue!r} already has workflow {held.existing_id!r} with dedup "
                f"key {queue.dedup_key!r} (enqueued or running), so {workflow_id!r} was not "
                "enqueued; the key frees when that workflow ends",
                held.existing_id,
            ) from None
        if created and queue is None:
            runtime.enqueue(workflow_id, row)
        elif created:
            self._poke_consumer()
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
        queue: QueueEntry | None = None,
    ) -> ChildHandle[Any]:
        """Start (or enqueue) a child workflow as step ``child`` of ``run`` (replayed: the
        recorded id)."""
        self._check_runtime(run, f"starts a {definition.name!r} child")
        limits = [] if detached or run.row.deadline is None else [run.row.deadline]
        if timeout is not None and queue is None:  # a queued child's counts from its dequeue
            limits.append(self.clock.now() + timeout)

        def insert(child_id: object) -> WorkflowRow:
            return self._insert(definition, check_workflow_id(child_id), args, kwargs,
                                deadline=min(limits, default=None), parent_id=run.workflow_id,
                                detached=detached, queue=queue)

        step, child_id = start_child(run, definition, workflow_id, insert,
                                     lambda row: _conflict(row.workflow_id, row, definition))
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
        storage, _ = self._parts()
        row = storage.get_workflow(workflow_id)
        if row is None:
            raise WorkflowNotFoundError(
                f"no workflow with id {workflow_id!r} in "
                f"{shown_location(self.path)}; check the id (list them "
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
        queue: str | None = None,
        parent: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[WorkflowInfo]:
        """Workflows matching every filter given, newest first: ``queue`` (enqueued on that
        queue), ``parent`` (its children), ``since``/``until`` (created at or after, before:
        aware datetimes)."""
        storage, _ = self._parts()
        rows = storage.list_workflows(
            status=None if status is None else Status(status).value, name=name,
            app_version=app_version, queue=queue, parent=parent,
            since=None if since is None else _instant(since, "since"),
            until=None if until is None else _instant(until, "until"),
            limit=limit, offset=offset,
        )
        return [workflow_info(row, self.codec) for row in rows]

    def steps(self, workflow_id: str) -> list[StepInfo]:
        """The workflow's journal rows in step order."""
        self._row(workflow_id)
        storage, _ = self._parts()
        return [step_info(row, self.codec) for row in storage.load_steps(workflow_id)]

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
        storage, runtime = self._parts()
        row = self._row(workflow_id)
        if app_version is not None:
            _check_version(app_version)
        here = self._runs_version(row.app_version if app_version is None else app_version)
        resumed = storage.resume(workflow_id, self.clock.now(), owner=self._owner if here else None,
                                 app_version=app_version)
        self._poke_consumer()  # a queued workflow resumed goes back to its queue
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
        storage, runtime = self._parts()
        row = self._row(workflow_id)
        if not isinstance(from_step, int) or from_step < 0:
            raise ValueError(f"from_step must be an int >= 0, got {from_step!r}")
        version = runtime.app_version if app_version is None else _check_version(app_version)
        target = check_workflow_id(new_id) if new_id is not None else str(uuid.uuid4())
        here = self._runs_version(version)
        storage.fork(row, target, from_step, now=self.clock.now(),
                     app_version=version, owner=self._owner if here else None)
        if here:
            runtime.enqueue(target)
        return Handle(self, target)

    def gc(self, older_than: float | timedelta) -> int:
        """Delete finished workflows not updated for ``older_than``; returns how many."""
        storage, _ = self._parts()
        return storage.delete_finished(self.clock.now() - to_seconds(older_than, "older_than"))

    # -- queues (``_queues``) -------------------------------------------------------------

    def queue(self, name: str, *, concurrency: int | None = None,
              worker_concurrency: int | None = None,
              rate_limit: tuple[int, float] | None = None,
              partitioned: bool = False, consume: bool = True) -> Queue:
        """Declare queue ``name`` and return it; this App consumes it once launched.

        Every launched App that declares a queue consumes it, and its limits hold across all
        of them: a dequeue counts, checks and claims in one transaction.

        Args:
            concurrency: at most this many of the queue's workflows ``pending`` at once,
                across every process on the file (per ``partition_key`` when partitioned).
            worker_concurrency: at most this many of them running in this App.
            rate_limit: ``(n, per_seconds)``: at most ``n`` dequeues in any rolling window of
                ``per_seconds``, across every process, on the App's clock.
            partitioned: ``concurrency`` applies per partition key, and every enqueue must
                give one (e.g. one account's events in order, accounts in parallel).
            consume: False makes this App a producer only: it enqueues on the queue and never
                dequeues from it (a web process leaving the work to workers).

        Raises:
            ValueError: a limit that is not an int >= 1 (or a bad rate). UsageError: the
            name is declared on this App already with other limits.
        """
        spec = queue_spec(name, concurrency, worker_concurrency, rate_limit, partitioned)
        if not isinstance(consume, bool):
            raise UsageError(f"consume= takes True or False, not {consume!r}")
        if not consume:
            return Queue(self, spec)  # enqueue only: not consumed, not recorded as declared
        with self._lock:
            known = self._queues.get(spec.name)
            if known is not None and known != spec:
                raise UsageError(
                    f"queue {spec.name!r} is already declared on this App as "
                    f"{Queue(self, known)!r}; declare each queue once (keep the Queue object "
                    "app.queue returned)")
            self._queues[spec.name] = spec
            launched = self._runtime is not None
        if launched and known is None:
            self._consume(spec)
        return Queue(self, spec)

    def _poke_consumer(self) -> None:
        dequeuer = self._dequeuer  # read once: a close() may set it to None meanwhile
        if dequeuer is not None:
            dequeuer.poke()

    def _declared_queues(self) -> list[QueueSpec]:
        with self._lock:
            return list(self._queues.values())

    def _consume(self, spec: QueueSpec) -> None:
        """Record a declared queue in the journal (for tools) and start consuming it."""
        storage, runtime = self._parts()
        storage.declare_queue(spec, self.clock.now())
        with self._lock:  # the consumer thread is made with the first queue, once per launch
            dequeuer = self._dequeuer
            if dequeuer is None and self._runtime is runtime:
                dequeuer = self._dequeuer = Dequeuer(
                    storage, runtime, self.clock, self.faults, queues=self._declared_queues,
                    names=lambda: list(self.registry.workflows),
                    app_version=self._app_version, capacity=self.workflow_threads)
        if dequeuer is not None:
            runtime.wake_consumer = dequeuer.poke
            dequeuer.poke()

    def _enqueue(self, queue: Queue, wf: Callable[..., R], args: Sequence[Any],
                 kwargs: dict[str, Any], workflow_id: object, priority: object,
                 dedup_key: object, partition_key: object) -> Handle[R]:
        """``Queue.enqueue``: ``start``, into the queue."""
        if queue._app is not self:
            raise UsageError(f"queue {queue.name!r} belongs to another App")
        clash = enqueue_keyword_clash(self._definition(wf).fn)
        if clash is not None:
            raise UsageError(
                f"workflow {self._definition(wf).name!r} has a parameter named {clash!r}, but "
                f"q.enqueue() takes {', '.join(ENQUEUE_KEYWORDS)} for itself, so it would never "
                f"receive that argument by keyword; rename the parameter (for example "
                f"{clash + '_'!r})"
            )
        return self._begin(wf, args, kwargs, workflow_id, lambda timeout: queue.entry(
            priority, dedup_key, partition_key, timeout))

    def list_queues(self) -> list[QueueInfo]:
        """Every queue declared on the file or holding workflows, with what waits and runs
        in it now (across every process), by name."""
        storage, _ = self._parts()
        return [queue_info(stats) for stats in storage.queue_stats(self.clock.now())]

    def serve(self) -> None:
        """Work until SIGINT or SIGTERM, then close gracefully: a long-running worker.

        Launches the App if needed; consumes its queues, fires its schedules and recovers
        pending workflows until a signal (in the main thread) or ``close()`` from another
        thread. Running steps then get the ``grace`` period; everything else stays pending
        for the next start, which resumes it: nothing is lost or repeated.
        """
        if self._runtime is None:
            self.launch()  # which clears ``_serving``: a close() from now on ends the wait
        caught: list[int] = []

        def stop(signum: int, _frame: object) -> None:
            caught.append(signum)
            self._serving.set()

        previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, stop)
        with self._lock:
            queues, schedules = sorted(self._queues), sorted(self._schedules)
        log.info("litedurable: serving %s (queues: %s; schedules: %s)", shown_location(self.path),
                 ", ".join(queues) or "none", ", ".join(schedules) or "none")
        try:
            # A close() from another thread sets the flag (a closed App has no runtime: that
            # ends the wait too, whatever the order).
            while not self._serving.wait(0.5) and self._runtime is not None:
                pass
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if caught:
                log.info("litedurable: %s received, closing", signal.Signals(caught[0]).name)
            self.close()

    # -- schedules ------------------------------------------------------------------------

    # -- messages, events, streams, promises (``_messages``) ------------------------------

    def send(self, workflow_id: str, message: Any, *, topic: str | None = None,
             idempotency_key: str | None = None) -> bool:
        """Put ``message`` in workflow ``workflow_id``'s mailbox (``ld.recv`` takes it).

        From outside a workflow, ``idempotency_key`` deduplicates per destination: a retry
        with the same key delivers nothing and returns False. Inside a workflow this is
        ``ld.send`` (exactly once, journaled). Returns True when delivered.

        Raises:
            WorkflowNotFoundError: no workflow has that id.
            SerializationError: the message cannot be stored (nothing was sent).
        """
        scope = current()
        if isinstance(scope, WorkflowRun):
            self._check_runtime(scope, "sends a message")
            if idempotency_key is not None:
                raise UsageError(
                    "a send inside a workflow is exactly once already (ld.send); "
                    "idempotency_key= is for senders outside workflows")
            messages.send(workflow_id, message, topic=topic)
            return True
        return messages.send_outside(self, workflow_id, message, topic=topic,
                                     idempotency_key=idempotency_key)

    def get_event(self, workflow_id: str, key: str, *,
                  timeout: float | timedelta | None = None, type: Any = None) -> Any:
        """Workflow ``workflow_id``'s event ``key`` (``ld.set_event``), waiting until it is set.

        Inside a workflow this is ``ld.get_event`` (recorded).

        Raises:
            WaitTimeoutError: ``timeout`` seconds passed first. WorkflowNotFoundError.
            EventNotSetError: the workflow ended without setting it (outside workflows).
        """
        if isinstance(current(), WorkflowRun):
            return messages.get_event(workflow_id, key, timeout=timeout, type=type)
        return messages.get_event_outside(self, workflow_id, key, timeout=timeout, type=type)

    def read_stream(self, workflow_id: str, key: str, *, offset: int = 0,
                    timeout: float | timedelta | None = None,
                    type: Any = None) -> Iterator[Any]:
        """Iterate over workflow ``workflow_id``'s stream ``key`` from ``offset``, following
        live writes from any process; it ends when the stream is closed or the workflow ends.

        Pass the count of items already seen as ``offset`` to resume (a page that reconnects).

        Raises:
            WaitTimeoutError: no item came for ``timeout`` seconds. WorkflowNotFoundError.
        """
        self._outside_only("read_stream", "a stream read live is not deterministic; pass "
                           "items between workflows with ld.send or events")
        return messages.read_stream_outside(self, workflow_id, key, offset=offset,
                                            timeout=timeout, type=type)

    def resolve(self, promise_id: str, value: Any = None) -> bool:
        """Settle durable promise ``promise_id`` with ``value``; True if this call settled it
        (False: it was settled already, and keeps its first settlement).

        Raises:
            PromiseNotFoundError: no promise has that id.
        """
        self._outside_only("resolve", "settle promises from a step, whose answer is recorded")
        return messages.settle_promise(self, promise_id, value=value)

    def reject(self, promise_id: str, message: str) -> bool:
        """Reject durable promise ``promise_id``: the workflow taking it raises
        ``PromiseRejectedError(message)``. True if this call settled it (see ``resolve``)."""
        self._outside_only("reject", "settle promises from a step, whose answer is recorded")
        return messages.settle_promise(self, promise_id, rejection=message)

    def _outside_only(self, call: str, why: str) -> None:
        if isinstance(current(), WorkflowRun):
            raise UsageError(f"app.{call}() was called in a workflow function: {why}")

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
        row = schedule_row(self._definition(wf), name, cron, tz, catch_up)
        with self._lock:
            self._schedules[name] = row
            storage = self._storage
        if storage is not None:
            storage.upsert_schedule(row, self.clock.now())
            self._poke_scheduler()

    def list_schedules(self) -> list[ScheduleInfo]:
        """Every schedule in the journal (from any process), by name."""
        storage, _ = self._parts()
        now = self.clock.now()
        return [schedule_info(row, now) for row in storage.schedules()]

    def pause_schedule(self, name: str) -> None:
        """Stop starting firings of schedule ``name`` (every process) until resumed."""
        self._set_paused(name, True)

    def resume_schedule(self, name: str) -> None:
        """Start firings of schedule ``name`` again, from now on (paused ones are not made up)."""
        self._set_paused(name, False)

    def remove_schedule(self, name: str) -> None:
        """Delete schedule ``name``; firings already started are not affected."""
        storage, _ = self._parts()
        with self._lock:
            self._schedules.pop(name, None)
        if not storage.delete_schedule(name):
            raise self._no_schedule(name)
        self._poke_scheduler()

    def _set_paused(self, name: str, paused: bool) -> None:
        storage, _ = self._parts()
        if not storage.pause_schedule(name, paused, self.clock.now()):
            raise self._no_schedule(name)
        self._poke_scheduler()

    def _no_schedule(self, name: str) -> ScheduleNotFoundError:
        return ScheduleNotFoundError(
            f"no schedule named {name!r} in "
            f"{shown_location(self.path)}; list them with app.list_schedules()"
        )

    def _poke_scheduler(self) -> None:
        scheduler = self._scheduler
        if scheduler is not None:
            scheduler.poke()

    def _fire(self, row: ScheduleRow, fire: datetime) -> None:
        """Start one firing of a schedule (a no-op if any process already did)."""
        storage, _ = self._parts()
        definition = self.registry.workflows[row.workflow]
        deadline = None if definition.timeout is None else self.clock.now() + definition.timeout
        self._insert(definition, f"{row.name}@{fire.isoformat()}", (fire,), {},
                     deadline=deadline)
        storage.schedule_fired(row.name, fire.timestamp())


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


def _instant(moment: object, what: str) -> float:
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise UsageError(f"{what}= takes an aware datetime (with a time zone), not {moment!r}")
    return moment.timestamp()


def _conflict(workflow_id: str, row: WorkflowRow, definition: WorkflowDef) -> WorkflowConflictError:
    return WorkflowConflictError(
        f"workflow id {workflow_id!r} already belongs to a {row.name!r} workflow, not "
        f"{definition.name!r}; use another id"
    )


def replay_check(app: App, storage: Storage, row: WorkflowRow) -> str | None:
    """Replay one recorded workflow against ``app``'s code without running or writing anything.

    Returns None when the code reproduces the journal (up to its last recorded step), else a
    description of the first difference.
    """
    definition = app.registry.workflows.get(row.name)
    if definition is None:
        return f"workflow {row.name!r} is not registered on this App"
    return replay_offline(storage, app.codec, app.clock, app.registry, row)
