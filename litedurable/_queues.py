"""Queues: push many workflows through limits that hold across every process on the file.

A queue is declared in code (``app.queue(name, concurrency=, worker_concurrency=,
rate_limit=, partitioned=)``); every launched App that declares it consumes it. An enqueued
workflow is an ordinary workflow row in status ``enqueued``, owned by no one. A *dequeue*
(``Storage.dequeue``) counts what the queue runs, checks the limits and claims the next
workflows for this App in one atomic operation, so two processes never both start one queued
workflow and racing consumers never overspend a limit. A dequeued workflow is ``pending``:
from there it is run, recovered, cancelled and resumed like any other, and it counts against
its queue's concurrency until it ends (a recovered one is the same row: it counts once).

Each App has one consumer thread (``Dequeuer``, ``litedurable-queue``). It takes work when
something may have made room or work, never on a poll of its own:

* an enqueue in this App, or a run here ending or suspending (``Runtime.wake_consumer``);
* another process's commit, seen by the commit watcher (an enqueue, a queued workflow that
  ended and freed a slot, a cancel);
* a timer at the instant a full rate-limit window lets the next dequeue go.

It takes no more than this App has run threads free, so a busy App leaves work to others.

Inside a workflow ``q.enqueue`` is a journaled child start (``_children.start_child``): the
child's id is recorded, so replay hands back the same child, enqueued once; a dedup refusal is
recorded too, and raised again by replay.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ._clock import Clock
from ._errors import AppClosedError, QueueArgumentError
from ._faults import Faults
from ._runtime import Runtime
from ._storage import QueueEntry, QueueSpec, Storage
from ._types import check_workflow_id

if TYPE_CHECKING:
    from ._app import App
    from ._handle import Handle

__all__ = ["Dequeuer", "Queue", "queue_spec"]

log = logging.getLogger("litedurable")

R = TypeVar("R")

BATCH = 64
"""The most workflows one dequeue takes (fewer when fewer run threads are free)."""
MAX_PRIORITY = 2**62
ERROR_PAUSE = 0.2
"""Seconds the consumer waits after a failed dequeue before it tries again; doubled after
each failure in a row, up to ``MAX_ERROR_PAUSE``."""
MAX_ERROR_PAUSE = 5.0


def _limit(value: object, what: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise QueueArgumentError(
            f"{what} must be an int >= 1 or None (no limit), not {value!r:.40}")
    return value


def queue_spec(name: object, concurrency: object, worker_concurrency: object,
               rate_limit: object, partitioned: object) -> QueueSpec:
    """A queue's declaration, each part checked here rather than at the first dequeue."""
    if not isinstance(name, str):
        raise QueueArgumentError(f"a queue name is a non-empty str, not {type(name).__name__}")
    check_workflow_id(name, "queue name")  # shown in tables and stored as text: as ids
    rate: tuple[int, float] | None = None
    if rate_limit is not None:
        if not isinstance(rate_limit, tuple | list) or len(rate_limit) != 2:
            raise QueueArgumentError(
                f"rate_limit takes (n, per_seconds), e.g. (10, 1.0) for 10 starts a second; "
                f"got {rate_limit!r:.60}")
        most = _limit(rate_limit[0], "rate_limit's n")
        per = rate_limit[1]
        if (not isinstance(per, int | float) or isinstance(per, bool)
                or not math.isfinite(per) or per <= 0):
            raise QueueArgumentError(
                f"rate_limit's per_seconds must be a finite number > 0, not {per!r}")
        assert most is not None
        rate = (most, float(per))
    if not isinstance(partitioned, bool):
        raise QueueArgumentError(f"partitioned= takes True or False, not {partitioned!r}")
    return QueueSpec(name, _limit(concurrency, "concurrency"),
                     _limit(worker_concurrency, "worker_concurrency"), rate, partitioned)


class Queue:
    """A queue declared with ``app.queue(...)``: ``enqueue`` workflows on it.

    Its limits hold across every process that consumes it (see ``App.queue``).
    """

    __slots__ = ("_app", "spec")

    def __init__(self, app: App, spec: QueueSpec) -> None:
        self._app = app
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        spec = self.spec
        limits = [f"{k}={v!r}" for k, v in (
            ("concurrency", spec.concurrency), ("worker_concurrency", spec.worker_concurrency),
            ("rate_limit", spec.rate_limit)) if v is not None]
        if spec.partitioned:
            limits.append("partitioned=True")
        return f"Queue({', '.join([repr(spec.name), *limits])})"

    def enqueue(self, wf: Callable[..., R], *args: Any, workflow_id: str | None = None,
                priority: int = 0, dedup_key: str | None = None,
                partition_key: str | None = None, **kwargs: Any) -> Handle[R]:
        """Enqueue ``wf(*args, **kwargs)`` and return its handle at once (status ``enqueued``
        until a consumer dequeues it; then ``pending``).

        Lower ``priority`` goes first, then enqueue order. ``workflow_id=``, ``timeout=`` and
        ``detached=`` are consumed as ``app.start`` consumes them, except that a timeout (this
        one, or ``@app.workflow(timeout=)``) counts from the dequeue. Inside a workflow this
        is a journaled child start and returns a ``ChildHandle`` (raceable in ``select``);
        cancelling the parent cancels the child, enqueued or running, unless detached.

        Args:
            dedup_key: refuse the enqueue while a workflow enqueued with the same key on this
                queue is enqueued or running (``QueueDeduplicatedError`` names it).
            partition_key: required on a ``partitioned`` queue (and refused on another):
                ``concurrency`` applies per key.

        Raises:
            QueueDeduplicatedError: the dedup key is held. WorkflowConflictError: the id
            belongs to a workflow of another name. SerializationError, InvalidIdError.
        """
        return self._app._enqueue(self, wf, args, kwargs, workflow_id, priority, dedup_key,
                                  partition_key)

    def entry(self, priority: object, dedup_key: object, partition_key: object,
              timeout: float | None) -> QueueEntry:
        """The checked queue entry of one enqueue."""
        spec = self.spec
        if (not isinstance(priority, int) or isinstance(priority, bool)
                or not -MAX_PRIORITY <= priority <= MAX_PRIORITY):
            raise QueueArgumentError(
                f"priority must be an int from -2**62 to 2**62 (lower runs first), not "
                f"{priority!r:.40}")
        for label, key in (("dedup_key", dedup_key), ("partition_key", partition_key)):
            if key is not None and (not isinstance(key, str) or not key or "\0" in key):
                raise QueueArgumentError(f"{label} must be a non-empty str, not {key!r:.60}")
        if spec.partitioned and partition_key is None:
            raise QueueArgumentError(
                f"queue {spec.name!r} is partitioned: every enqueue needs a partition_key= "
                "(its concurrency applies per key)")
        if not spec.partitioned and partition_key is not None:
            raise QueueArgumentError(
                f"queue {spec.name!r} is not partitioned, so partition_key= would do nothing; "
                "declare it with app.queue(..., partitioned=True)")
        return QueueEntry(spec.name, priority, dedup_key,  # type: ignore[arg-type]
                          partition_key, timeout)  # type: ignore[arg-type]


class Dequeuer:
    """One App's queue consumer: the ``litedurable-queue`` thread (see the module docstring).

    Args:
        storage, runtime, clock, faults: the App's.
        queues: the queues this App consumes, as declared now.
        names: the workflow names this App runs (it takes no others).
        app_version: a gated App's version (it takes only that version's), else None.
        capacity: run threads: at most this many workflows busy here, queued ones included.
    """

    def __init__(self, storage: Storage, runtime: Runtime, clock: Clock, faults: Faults, *,
                 queues: Callable[[], Sequence[QueueSpec]], names: Callable[[], Sequence[str]],
                 app_version: str | None, capacity: int) -> None:
        self._storage = storage
        self._runtime = runtime
        self._clock = clock
        self._faults = faults
        self._queues = queues
        self._names = names
        self._app_version = app_version
        self._capacity = capacity
        self._wake = threading.Event()
        self._stopping = False
        # Rate-window instants a timer will poke at (this thread's own: pruned as they pass).
        self._armed: set[float] = set()
        self._turn = 0  # which queue is asked first: free threads go round the queues
        self._thread = threading.Thread(target=self._loop, name="litedurable-queue",
                                        daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Look for work now (something may have made room, or work)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _loop(self) -> None:
        pause = ERROR_PAUSE
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping or self._faults.dead:
                return
            try:
                self._take()
                pause = ERROR_PAUSE
            except AppClosedError:
                return
            except BaseException as exc:
                if self._faults.dead:
                    return
                if self._storage.gone is not None:  # no write can succeed again: say it once
                    log.warning("litedurable: the queue consumer stops: %s", exc)
                    return
                log.warning("litedurable: dequeuing failed (trying again in %.1f s): %s",
                            pause, exc)
                self._runtime.timers.add(self._clock.now() + pause, self.poke)
                pause = min(pause * 2, MAX_ERROR_PAUSE)

    def _take(self) -> None:
        """One round over the queues: take what the limits and the free threads allow."""
        specs = list(self._queues())
        if not specs:
            return
        names = list(self._names())
        now = self._clock.now()
        self._armed = {at for at in self._armed if at > now}
        self._turn = (self._turn + 1) % len(specs)
        more = False
        for spec in specs[self._turn:] + specs[:self._turn]:
            free = min(BATCH, self._capacity - self._runtime.busy)
            if free <= 0 or self._stopping:
                return  # a run ending here pokes again
            took = self._storage.dequeue(spec, self._runtime.owner, clock=self._clock.now,
                                         limit=free, names=names,
                                         app_version=self._app_version)
            for wid in took.workflow_ids:
                self._runtime.enqueue(wid)
            at = took.reopens_at
            if at is not None and at not in self._armed:
                self._armed.add(at)
                self._runtime.timers.add(at, self.poke)
            more = more or len(took.workflow_ids) == free
        if more:
            self._wake.set()  # a full batch: there may be more to take

