"""The runtime, and the threading contract of litedurable (every thread, every lock).

The runtime drives one launched App's workflows: a *slot* per workflow it owns (queued,
running or suspended), the ``go`` tasks in flight, and the threads below. Steps started by
``go`` belong to the slot, not to the run, so they keep running across an unwind and the
replayed ``go`` attaches to them instead of starting them again. Every write goes through the
storage and is fenced on this runtime's owner token.

Threads
-------
* **caller threads**: user code calling ``App``/``Handle`` methods. They write through the
  storage and wait for outcomes on an ``Event`` of their own (``expect_outcome``), and for
  events and stream items on ``Runtime.changes`` (``_messages``).
* ``litedurable-workflow-N`` (``Runtime.run_pool``): a run thread executes one workflow
  function and its inline steps; step numbers are taken here, in program order (``_run``).
* ``litedurable-step-N`` (``Runtime.step_pool``): executes ``go`` bodies and records them.
* ``litedurable-timer`` (``Timers``): fires durable sleeps, select timeouts, deadlines and
  suspended wake-ups.
* ``litedurable-watch`` (the commit watcher): polls ``Storage.changed_elsewhere`` and delivers
  other processes' cancellations and outcomes; asks the probes of workflows waiting for
  messages, events and promises (storage reads, no lock held) and wakes those that say yes.
* ``litedurable-heartbeat`` (``Lease``): refreshes the owner row; recovers once per lease, and
  soon after a run stopped on a journal error (``journal_failed``, ``Lease.hurry``).
* ``litedurable-scheduler`` (``Scheduler``): starts the firings of cron schedules.
* ``litedurable-queue`` (``Dequeuer``): takes queued workflows for this App (``_queues``),
  when poked: by an enqueue here, a run here ending or suspending (``wake_consumer``), the
  commit watcher, or a timer at a rate-limit window's opening. It holds no lock while it
  dequeues; ``Dequeuer._wake`` is its event.
* The group commit has no thread: whichever writer finds no commit in flight commits.
* ``litedurable-listen`` (the PostgreSQL backend's ``Driver``, ``_postgres/driver.py``): reads
  notifications on its own connection and sets ``Driver._changed``, which
  ``changed_elsewhere`` reads and clears; it takes no other lock.
* ``litedurable-notify`` (the same ``Driver``): sends one ``NOTIFY`` each time
  ``Driver._news`` is set (by ``announce``, after a write of ours commits), covering every
  commit before it; it takes a pooled connection and no lock. The PostgreSQL journal's step
  rows have a group commit of their own (``_postgres/commit.py``): no thread, leader/follower
  under ``StepCommit._mutex`` (the queue; nothing nests inside it), each follower waiting on
  its own ``StepCommit.wake`` (one per queued write). The leader writes on the driver's own
  connection (``Driver.autocommit(own=True)``), whose psycopg lock ``Driver.close`` takes
  to close it after the statement in flight, holding nothing else.

Locks, what each guards, and nesting
------------------------------------
* ``App._lock``: the launch's parts (storage, runtime, lease, the queue consumer) and the
  declared schedules and queues.
  Held while a launch opens the storage and writes its first heartbeat (launches are
  serialized), so the storage's locks nest inside it then, and while a close marks the
  runtime closing (``Runtime._lock`` nests inside it then); no engine thread ever takes it.
* ``App._recovering``: one recovery at a time (launch's, the heartbeat's, a resume's), so
  none takes another's fresh claims for stopped runs. Taken holding no lock, and held
  across the recovery's storage I/O, enqueues and announcements: every lock those take
  nests inside it.
* ``Runtime._lock``: the slot table (``_slots`` and every ``_Slot`` field), ``_abandoned``,
  ``_result_events``, ``_waiters``, ``_active``, ``cancelled`` and ``closing``. Never held
  across storage I/O, user code or a pool submit. Only ``StepScope.cond`` nests inside it
  (``request_cancel`` while abandoning tasks).
* ``Runtime.changes``: ``change_seq`` and the count of outside callers waiting on it. Taken
  holding no other lock, by a committer after its commit and by the waiters.
* ``WorkflowRun.cond``: a run's wait (``steps_ready``, ``finished``, ``pokes``); wakers change
  what the wait reads, then notify under it. Held by the run thread while it evaluates ``ready()``,
  which reads memory only (task outcomes, timer deadlines, ``finished``): never the storage,
  so a slow read cannot block the step threads that notify. Only the clock's own lock
  (``FakeClock._lock``) nests inside it. Never taken while holding ``Runtime._lock``.
* ``StepScope.cond`` (made once, under ``_SCOPE_CONDS``): ``cancel_requested`` and
  ``abandoned``; a retry delay waits on it.
* ``GroupCommit._mutex`` (and ``GroupCommit._cond`` on it): the write queue,
  ``_committing``, ``_closing``, ``_version_wanted``/``_version_sampled``. A commit runs
  outside it, in the leader's thread; each queued writer waits on a lock of its own
  (``GroupCommit.wake``, one per queued write), released when its batch is durable.
  ``changed_elsewhere`` reads ``PRAGMA data_version`` under it, when no commit is in flight
  (the writer is idle).
* ``Driver._read_cond``: the reader connections lent and idle; reads run outside it.
* ``Timers._cond``: the timer heap; actions run outside it. ``Scheduler._cond``: its poke and
  stop flags. ``WorkerPool._cond``: a pool's queue and threads. ``FakeClock._lock``: its time
  and the conditions waiting on it.
* Events: ``Lease._wake``, ``Runtime._watcher_wake``, ``Dequeuer._wake``, ``App._serving``
  (``serve`` returns when it is set), one per ``Handle.result`` waiter, and the PostgreSQL
  driver's ``Driver._changed`` (news from other connections), ``Driver._listen_ready``
  (its listener's first ``LISTEN`` done) and ``Driver._news`` (a commit of ours to announce).
* ``_Journal._lock`` (``litedurable ui``'s server): the one PostgreSQL journal its request
  threads share, opened at the first request under it; nothing nests inside it.

No thread holds two of these at once except the pairs named above (``App._lock`` then the
storage's or ``Runtime._lock``; ``App._recovering`` then any other; ``Runtime._lock`` then
``StepScope.cond``; ``WorkflowRun.cond`` then ``FakeClock._lock``), always in that order, so
there is no lock-order cycle.

Deliberate unlocked reads
-------------------------
* ``Runtime.cancelled`` and ``Runtime.closing`` by ``WorkflowRun.check_interrupts`` and
  ``ld.cancelled()``: one dict lookup or flag read (atomic under the GIL); the writer notifies
  the run after writing, so a stale read is corrected at the wake-up it causes.
* ``StepTask.outcome``/``broken`` by futures: written once, by the step thread, before it
  notifies the run under ``WorkflowRun.cond``, which publishes them.
* ``StepScope.cancel_requested`` by ``ld.cancelled()`` in a body: a flag polled by design.
* ``Runtime._active``/``_result_events``/``_waiters``/``_outside``/``_listeners`` by the
  commit watcher, to pick its pace: a stale answer costs one interval. ``_active`` by the
  queue consumer (``busy``), to size a dequeue: a stale answer takes a few workflows more or
  less, and a run ending pokes it again.
* ``Runtime._outside`` by ``changed``: a waiter counts itself before it reads the storage, so
  a commit it could miss was made before that read, which sees it.
* ``Runtime.wake_consumer``: set once (by the first queue's declaration) and read by the
  watcher and the threads that end runs; a read before it is set pokes no one, and the
  consumer takes what waits when it starts. ``Dequeuer._stopping``, ``Lease._stopping`` and
  ``Lease._hurried``: flags, each set before the event that wakes its thread.
  ``Steps.sites``: one key per live call, put and dropped by its run thread; other threads
  only read a key of a call in progress (dict operations are atomic).
  ``Tracer._latest`` (``_telemetry``): each key written by its workflow's run thread.
* ``WorkflowRun.listening``: replaced (never mutated) by the run thread; the watcher copies
  the list it finds under ``Runtime._lock``, and a probe is a read that may be asked late.
* ``GroupCommit._version_wanted`` by the committer: a missed request makes
  ``changed_elsewhere`` read the version itself once the commit ends.
* ``Faults`` fields: set by a test before or at the crash it simulates.

Time
----
Durable time (deadlines, timers, retry delays, fire times) is the injected ``Clock``. Real
time is ``time.monotonic()`` for how long a run holds its thread (``suspend_after``), for
grace and busy timeouts, and wall time for leases (``_lease`` says why). A wait that has both
asks the clock to wait for its deadline with the real hold as a cap (``Clock.wait(timeout=)``):
the two are never converted into each other.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ._clock import Clock, engine_clock, to_datetime
from ._codec import Codec
from ._context import enter, leave
from ._errors import (
    AppClosedError,
    JournalError,
    NonDeterminismError,
    SerializationError,
    WorkflowCancelledError,
    WorkflowTimedOutError,
    passes,
)
from ._faults import Faults
from ._pool import WorkerPool
from ._registry import Registry
from ._run import Unwind, WorkflowRun
from ._steps import Outcome, Steps, StepTask
from ._storage import StepRow, Storage, WorkflowRow
from ._telemetry import Tracer
from ._timers import Timers
from ._types import Status

WATCH_INTERVAL = 0.005
"""Seconds between two looks for commits made by other processes while something here could
care: a ``Handle.result`` waiter, or a workflow running here.

This bounds the cross-process wake-up latency of ``Handle.result`` and of cancellation; a look
costs microseconds and no file I/O."""
MAX_OUTSIDE_WAIT = 1.0
"""The longest an outside caller waiting for an event or a stream item sleeps before it
reads the storage again anyway: a safety net, not the wake-up (``Runtime.changed``)."""
IDLE_WATCH_INTERVAL = 0.1
"""The same while nothing here waits or runs, so an idle App costs next to no CPU. An App
that consumes queues keeps the fast pace (about 1.5 % of a core on the test machine): another
process's enqueue must start here within milliseconds, and only a look can tell."""

__all__ = ["SETTLED", "Runtime", "SlotState"]

log = logging.getLogger("litedurable")

SETTLED = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
"""Statuses a waiting workflow takes as the outcome. The parked ones (nondeterministic,
exhausted) are not: they wait for someone to fix and resume them, or to cancel them."""


class SlotState(enum.Enum):
    """Where a workflow the runtime owns is: waiting for a run thread, on one, or neither."""

    QUEUED = "queued"  # submitted to the run pool
    RUNNING = "running"  # a run thread drives it
    SUSPENDED = "suspended"  # unwound in a long wait; driven again when what it waits for happens


class _Slot:
    """What the runtime knows about a workflow it owns and has not finished."""

    __slots__ = ("deadline_armed", "listening", "reached", "rerun", "row", "run", "state", "tasks",
                 "watching")

    def __init__(self, row: WorkflowRow | None) -> None:
        self.state = SlotState.QUEUED
        self.row = row  # set when freshly created: no need to read it back
        self.run: WorkflowRun | None = None
        self.tasks: dict[int, StepTask] = {}
        self.watching: set[str] = set()  # workflows whose outcome this one waits for
        # A suspended run's probes (``WorkflowRun.listening``): the commit watcher resumes it
        # when one says another process committed what it waits for.
        self.listening: list[Callable[[], bool]] = []
        self.deadline_armed = False  # a timer for the workflow's deadline is set
        # Enqueued again while a run drives it (resumed while its cancelled run unwinds): drive
        # it once more when this run ends, instead of dropping the slot.
        self.rerun = False
        # The furthest (next step, waits passed) an earlier run here got to (ld.is_replaying).
        self.reached = (-1, 0)


class Runtime:
    """Owns the threads, the in-flight steps and the workflow slots of one launched App.

    Args:
        storage, codec, clock, registry: the App's collaborators.
        owner: this App's owner token (fences every write).
        app_version: recorded on each workflow this runtime starts.
        workers: step pool size (threads running ``go`` bodies).
        workflow_threads: run pool size (threads running workflow functions).
        suspend_after: seconds a run may block in a wait before it unwinds.
        tracer: the App's spans (``_telemetry``), or None when tracing is off.
        journal_failed: called after a run stopped on a journal error (``Lease.hurry``: its
            workflow is recovered, here, as soon as the journal answers again).
    """

    def __init__(
        self,
        *,
        storage: Storage,
        codec: Codec,
        clock: Clock,
        registry: Registry,
        owner: str,
        app_version: str,
        workers: int,
        workflow_threads: int,
        suspend_after: float,
        faults: Faults,
        tracer: Tracer | None = None,
        journal_failed: Callable[[], None] = lambda: None,
    ) -> None:
        self.storage = storage
        self.codec = codec
        # A clock with the older two-argument ``wait`` is adapted, not failed on (``_clock``).
        self.clock = clock = engine_clock(clock)
        self.registry = registry
        self.owner = owner
        self.app_version = app_version
        self.faults = faults
        self.journal_failed = journal_failed
        self.tracer = tracer
        self.suspend_after = suspend_after
        self.closing = False
        self.cancelled: dict[str, WorkflowCancelledError] = {}  # delivered, by workflow id
        self._active = 0  # slots queued or running (not suspended): the watcher's pace
        self._listeners = 0  # suspended slots with probes (``_Slot.listening``): the same
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
        self.steps = Steps(storage, codec, clock, owner, faults, tracer)
        self.timers = Timers(clock, faults)
        # Callers outside workflows waiting for an event or a stream item (``_messages``):
        # ``changes`` is notified, and ``change_seq`` grows, after every commit that may be
        # what they wait for, here or (seen by the commit watcher) in another process.
        self.changes = threading.Condition()
        self.change_seq = 0
        self._outside = 0  # such callers waiting now (under ``changes``): the watcher's pace
        # The queue consumer's poke (``_queues.Dequeuer``), when this App consumes queues:
        # called when a run here ends or suspends (a thread, maybe a queue slot, is free) and
        # when another process committed (an enqueue, a slot freed there).
        self.wake_consumer: Callable[[], None] | None = None
        self._watcher_wake = threading.Event()  # set to look now (or to stop, when closing)
        self._watcher = threading.Thread(
            target=self._commit_watch_loop, name="litedurable-watch", daemon=True
        )
        self._watcher.start()

    # -- scheduling -----------------------------------------------------------------------

    def enqueue(self, workflow_id: str, row: WorkflowRow | None = None) -> None:
        """Make sure the workflow is (or will be) driven by a run thread."""
        with self._lock:
            if self.closing:
                return
            slot = self._slots.get(workflow_id)
            if slot is None:
                slot = self._slots[workflow_id] = _Slot(row)
                slot.tasks.update(self._abandoned.pop(workflow_id, ()))
            elif slot.state == SlotState.RUNNING:
                slot.rerun = True  # e.g. resumed while its cancelled run unwinds
                return
            elif slot.state == SlotState.QUEUED:
                return
            slot.state = SlotState.QUEUED
            self._active += 1
            if self._active == 1:
                self._watcher_wake.set()  # from the idle pace to the fast one
        self.run_pool.submit(lambda: self._drive(workflow_id))

    def notify(self, workflow_id: str, *, step_settled: bool = False,
               finished: Sequence[str] = (), poked: bool = False) -> None:
        """Something a workflow may wait for happened: wake its run, or resume it.

        ``step_settled``: it was one of its ``go`` steps settling (see ``WorkflowRun.notify``).
        ``finished``: workflows it may wait for that reached a settled status. ``poked``: a
        message, event or promise it may wait for was committed.
        """
        with self._lock:
            slot = self._slots.get(workflow_id)
            run = slot.run if slot is not None else None
            suspended = slot is not None and slot.state == SlotState.SUSPENDED
        if run is not None:
            run.notify(step_settled=step_settled, finished=finished, poked=poked)
        elif suspended:
            self.enqueue(workflow_id)

    def delivered(self, workflow_id: str) -> None:
        """A message, event, stream item or promise settlement for ``workflow_id`` (or one it
        may wait on) was committed here: wake whoever may be waiting for it in this process."""
        with self._lock:
            waiting = list(self._waiters.get(workflow_id, ()))  # its event futures' runs
        for wid in (workflow_id, *waiting):
            self.notify(wid, poked=True)
        self.changed()

    def changed(self) -> None:
        """Wake the outside callers waiting for events and stream items (see ``changes``)."""
        if self._outside:  # unlocked: a waiter counts itself before it reads the storage
            with self.changes:
                self.change_seq += 1
                self.changes.notify_all()

    def wait_for_change(self, seen: int, timeout: float | None) -> None:
        """Block an outside caller until ``change_seq`` moves past ``seen`` or ``timeout``.

        Take ``seen`` from ``outside_waiting`` before reading the storage: a commit after
        that read moves ``change_seq``, so it is never missed.
        """
        with self.changes:
            self.changes.wait_for(lambda: self.change_seq != seen or self.closing,
                                  timeout=min(timeout, MAX_OUTSIDE_WAIT)
                                  if timeout is not None else MAX_OUTSIDE_WAIT)

    def outside_waiting(self, delta: int) -> int:
        """Count an outside caller in (+1) or out (-1); returns ``change_seq`` as it is now."""
        with self.changes:
            self._outside += delta
            seen = self.change_seq
        if delta > 0:
            self._watcher_wake.set()  # the commit watcher leaves its idle pace now
        return seen

    @property
    def busy(self) -> int:
        """Workflows queued for or on a run thread here (unlocked: a hint, for the consumer)."""
        return self._active

    def is_active(self, workflow_id: str) -> bool:
        with self._lock:
            return workflow_id in self._slots

    def _drive(self, workflow_id: str) -> None:
        with self._lock:
            slot = self._slots[workflow_id]
            slot.state = SlotState.RUNNING
            row, slot.row = slot.row, None
            if slot.listening:
                slot.listening = []
                self._listeners -= 1
        run: WorkflowRun | None = None
        failed = False
        try:
            # A freshly started workflow has its row and no steps; any other is read back,
            # row and steps in one read.
            steps: list[StepRow] = []
            if row is None:
                row, steps = self.storage.load_workflow(workflow_id)
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
            run = this = WorkflowRun(self, definition, row, steps)
            with self._lock:
                slot.run = run
                run.resumed_from = slot.reached
            if self.tracer is None:  # tracing off: the one check it costs a run
                self._run(run)
            else:
                self.tracer.run_workflow(run, lambda: self._run(this))
        except BaseException as exc:
            if self.faults.dead or self.faults.crashed is not None:
                return
            if isinstance(exc, JournalError | AppClosedError):
                log.warning("litedurable: workflow %r stopped: %s", workflow_id, exc)
                # Still ours and pending, no longer running: if what stopped it may pass (a
                # server restarting), recovered as soon as the journal answers again.
                failed = passes(exc)
            else:
                log.exception("litedurable: workflow %r stopped unexpectedly", workflow_id)
        finally:
            self._after_drive(workflow_id, slot, run)
        if failed and not self.closing:
            self.journal_failed()

    def _after_drive(self, workflow_id: str, slot: _Slot, run: WorkflowRun | None) -> None:
        suspended = (
            run is not None and isinstance(run.fatal, Unwind) and run.wake_ready is not None
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
            if slot.rerun and not self.closing:
                # Enqueued during this run (resumed after a cancel): drive it again now, even if
                # this run suspended. A suspended run of the cancelled workflow waits on steps it
                # abandoned (whose bodies may run for a long time); the next run reads the
                # journal again and decides for itself what to wait for. No run is live until
                # then, so a cancellation kept for this run (see ``resume_local``) is dropped:
                # the next run sees a later one in the journal or in ``cancelled``.
                slot.rerun, slot.state, again, suspended = False, SlotState.QUEUED, True, False
                self.cancelled.pop(workflow_id, None)
            elif suspended:
                assert run is not None
                slot.state = SlotState.SUSPENDED
                slot.listening = run.listening
                self._listeners += bool(run.listening)
                self._active -= 1
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
        elif self.wake_consumer is not None:
            self.wake_consumer()  # a run thread is free (and a queue slot, if it ended)
        if suspended:
            assert run is not None and run.wake_ready is not None
            if run.wake_deadline is not None:
                self.timers.add(run.wake_deadline, lambda: self.notify(workflow_id))
            if run.wake_ready():  # it happened while we were unwinding
                self.enqueue(workflow_id)

    def _run(self, run: WorkflowRun) -> tuple[str, BaseException | None]:
        """Drive one run of the workflow; return how it ended (``_telemetry``'s endings) and
        the error it ended with, if any."""
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
        except Unwind:
            outcome = None
        except BaseException as exc:
            # SystemExit or KeyboardInterrupt raised by the workflow's code (or by a step and
            # let through) is its outcome like any error: left unrecorded, the workflow would
            # stay pending and run again at every recovery.
            outcome = Outcome(error=exc)
        finally:
            leave(token)
        if self.faults.crashed is not None:
            raise self.faults.crashed  # a simulated crash unwound the run: record nothing
        fatal = run.fatal or run.unreached(None if outcome is None else outcome.error)
        if isinstance(fatal, WorkflowCancelledError):
            run.ended = True  # already recorded by cancel()
            return "cancelled", fatal
        if isinstance(fatal, Unwind):
            return "suspended" if not self.closing else "closing", None
        if isinstance(fatal, AppClosedError) and self.closing:
            return "closing", None  # still pending
        if isinstance(fatal, NonDeterminismError):
            self.finish(run.workflow_id, Status.NONDETERMINISTIC, Outcome(error=fatal), run.row)
            run.ended = True
            return "nondeterministic", fatal
        if fatal is not None:
            raise fatal
        assert outcome is not None
        self.faults.fire("before_outcome", workflow_id=run.workflow_id)
        error = self.finish(run.workflow_id, None, outcome, run.row, hint=hint)
        run.ended = True
        self.faults.fire("after_outcome", workflow_id=run.workflow_id)
        return ("succeeded", None) if error is None else ("failed", error)

    def finish(
        self, workflow_id: str, status: Status | None, outcome: Outcome,
        row: WorkflowRow | None = None,
        *,
        hint: Any = None,
    ) -> BaseException | None:
        """Record the workflow's outcome (status defaults from the outcome) and wake waiters;
        return the error recorded, if any.

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
        self.storage.finish_workflow(
            workflow_id, self.owner, status=status, output=output, error=error,
            now=self.clock.now(), known=row,
        )
        self.announce_finished([workflow_id], settled=status in SETTLED)
        return outcome.error

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
            self._watcher_wake.set()  # the commit watcher leaves its idle pace now
        return event

    def forget_outcome(self, workflow_id: str, event: threading.Event) -> None:
        with self._lock:
            events = self._result_events[workflow_id]
            events.remove(event)
            if not events:
                del self._result_events[workflow_id]

    def announce_finished(self, workflow_ids: Sequence[str], *, settled: bool = True) -> None:
        """Wake the ``Handle.result`` waiters and the workflows waiting on ``workflow_ids``.

        ``settled``: their status is one a waiting workflow takes as the outcome (not parked);
        the waiting runs are told which, so their wait needs no storage read (``WorkflowFuture``).
        """
        with self._lock:
            events = [e for wid in workflow_ids for e in self._result_events.get(wid, ())]
            waiting: dict[str, list[str]] = {}
            for wid in workflow_ids:
                for waiter in self._waiters.get(wid, ()):
                    waiting.setdefault(waiter, []).append(wid)
        for event in events:
            event.set()
        for waiter, targets in waiting.items():
            self.notify(waiter, finished=targets if settled else ())
        self.changed()  # a stream read by an outside caller ends with its workflow
        consumer = self.wake_consumer
        if consumer is not None:  # a queued one ending (cancelled, parked) frees its slot
            consumer()

    def wake_on_outcome(self, waiter: str, target: str) -> None:
        """Wake ``waiter`` when ``target`` gets an outcome, here or in another process."""
        with self._lock:
            slot = self._slots.get(waiter)
            if slot is None:
                return
            slot.watching.add(target)
            self._waiters.setdefault(target, set()).add(waiter)

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
            task.outcome = self.steps.execute(task)
        except BaseException as exc:
            task.broken = exc
            quiet = JournalError | AppClosedError | WorkflowCancelledError
            if not self.faults.dead and not isinstance(exc, quiet):
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

    # -- deadlines ------------------------------------------------------------------------

    def _arm_deadline(self, slot: _Slot, row: WorkflowRow) -> bool:
        """Set the timer for ``row``'s deadline once; False if it has already passed."""
        assert row.deadline is not None
        if self.clock.now() >= row.deadline:
            self.expire(row.workflow_id)
            return False
        if not slot.deadline_armed:
            slot.deadline_armed = True
            self.timers.add(row.deadline, lambda: self.expire(row.workflow_id))
        return True

    def expire(self, workflow_id: str) -> None:
        """Cancel the workflow (and its children) if it is pending past its deadline."""
        row = self.storage.get_workflow(workflow_id)
        if row is None or row.status != Status.PENDING or row.deadline is None:
            return  # finished, or resumed (which clears the deadline)
        self.cancel(workflow_id, WorkflowTimedOutError(
            f"workflow {workflow_id!r} ran past its deadline "
            f"({to_datetime(row.deadline).isoformat()}) and was cancelled with its children; "
            "give it a longer timeout=, or app.resume() it (a resumed workflow has no deadline)"
        ))

    # -- other processes ------------------------------------------------------------------

    def _commit_watch_loop(self) -> None:
        interval = WATCH_INTERVAL
        while True:
            self._watcher_wake.wait(interval)
            self._watcher_wake.clear()
            if self.closing:
                return
            consumer = self.wake_consumer
            busy = (self._result_events or self._active or self._waiters or self._outside
                    or self._listeners or consumer is not None)
            interval = WATCH_INTERVAL if busy else IDLE_WATCH_INTERVAL
            try:
                if self.storage.changed_elsewhere():
                    if consumer is not None:
                        consumer()
                    self._foreign_change()
            except AppClosedError:
                return
            except BaseException as exc:
                if self.faults.dead:
                    return
                log.warning("litedurable: watching for other processes' commits failed: %s", exc)

    def _foreign_change(self) -> None:
        """Another process committed: deliver its cancellations and finished workflows here.

        Suspended workflows are left out: they read their row again when they are driven.
        """
        with self._lock:
            running = [wid for wid, s in self._slots.items()
                       if s.state != SlotState.SUSPENDED or s.tasks]
            targets = list(self._waiters)
            awaited = list(self._result_events)
            listening = [(wid, list(s.run.listening if s.run is not None else s.listening))
                         for wid, s in self._slots.items()]
        self.changed()
        for wid, probes in listening:  # reads only; a yes wakes (or resumes) the workflow
            if any(probe() for probe in probes):
                self.notify(wid, poked=True)
        statuses = self.storage.statuses([*running, *targets, *awaited])
        gone = [w for w in running if statuses.get(w) == Status.CANCELLED]
        if gone:
            self.cancel_local(gone)
        # Workflows wait for a settled outcome; Handle.result returns on any non-pending status
        # (and reports a workflow deleted meanwhile).
        settled = {w for w in [*targets, *awaited] if statuses.get(w, "pending") in SETTLED}
        self.announce_finished(sorted(settled))
        self.announce_finished([a for a in awaited if a not in settled and (
            a not in statuses or Status(statuses[a]).is_terminal)], settled=False)

    # -- cancellation and shutdown --------------------------------------------------------

    def cancel(self, workflow_id: str, error: WorkflowCancelledError) -> list[str]:
        """Cancel a workflow tree in the journal and stop what of it runs here."""
        done = self.storage.cancel_tree(workflow_id, self.codec.encode_error(error),
                                        self.clock.now())
        self.cancel_local(done, error)
        self.announce_finished(done)
        return done

    def resume_local(self, workflow_id: str) -> None:
        """The journal made ``workflow_id`` pending under this owner again: drive it."""
        with self._lock:
            slot = self._slots.get(workflow_id)
            if slot is not None and slot.state is SlotState.RUNNING:
                # A run of the cancelled workflow is live here and may not have looked at
                # ``cancelled`` yet. Dropping the cancellation now would let it carry on as if
                # never cancelled (waiting on steps that ``cancel_local`` abandoned) while the
                # resume waits for it to end. It keeps the cancellation and stops at its next
                # check; ``_after_drive`` drops it when it starts the resumed run (``rerun``).
                slot.rerun = True
                return
            self.cancelled.pop(workflow_id, None)
        self.enqueue(workflow_id)

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

    def begin_close(self) -> None:
        """Take no more work, before the App lets go of this runtime (``shutdown`` follows).

        From here a run unwinds at its next journaled call, and so does one that acts on
        workflows through its App (which no longer answers): both stay pending, unrecorded.
        """
        with self._lock:
            self.closing = True
            self.steps.closing = True
        with self.changes:  # outside callers waiting for events and stream items: stop
            self.changes.notify_all()

    def shutdown(self, grace: float) -> list[str]:
        """Unwind every run, give step bodies ``grace`` seconds, join all threads.

        Returns the names of threads that did not finish in time.
        """
        with self._lock:
            self.closing = True
            self.steps.closing = True
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
        self._watcher_wake.set()
        deadline = time.monotonic() + grace
        stuck = self.run_pool.shutdown(grace)
        stuck += self.step_pool.shutdown(max(0.0, deadline - time.monotonic()))
        self.timers.stop(max(0.1, deadline - time.monotonic()))
        self._watcher.join()
        with self._lock:
            events = [e for waiting in self._result_events.values() for e in waiting]
        for event in events:  # Handle.result waiters read again, and learn the App closed
            event.set()
        return stuck

