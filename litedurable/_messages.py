"""Messages, events, streams and durable promises: how a workflow hears from the world.

Inside a workflow each call is a journaled call (``WorkflowRun.journaled``), and the row it
writes (a message, an event, a stream item, a promise) commits in one transaction with the
step row that records it: a crash can neither lose nor repeat it. Receiving is a durable
future (``ExternalFuture``), raceable in ``select``/``as_completed`` with steps, timers and
children:

* ``ld.message(topic)`` settles when the workflow *consumes* the oldest unread message on the
  topic: marking it read and recording it as the future's step are one transaction. A future
  that lost a race keeps the message it consumed; one never settled consumes nothing.
* ``ld.event(workflow_id, key)`` settles when that workflow has set the event; the value seen
  is copied into this workflow's journal.
* ``ld.promise()`` settles when anyone calls ``app.resolve``/``app.reject`` with its id; the
  promise row is its record (it is settled once and never changes).

``ld.recv`` and ``ld.get_event`` are those futures' ``result(timeout)``: a timeout is a recorded
``select`` decision, so a replay times out where the first run did even if the message has
arrived since, and the message stays for the next receive.

Wake-ups: a commit made in this process wakes the workflows it concerns (``Runtime.delivered``);
another process's commit is seen by the commit watcher, which asks each waiting workflow's
probes (read-only) before waking it. Outside callers (``get_event``, ``read_stream``) wait on
``Runtime.changes``. Nothing polls on a timer of its own.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from ._concurrency import ExternalFuture, Future
from ._errors import (
    EventNotSetError,
    PromiseNotFoundError,
    PromiseRejectedError,
    SerializationError,
    UsageError,
    WaitTimeoutError,
    WorkflowNotFoundError,
)
from ._run import WorkflowRun, current_run
from ._steps import Outcome
from ._storage import StepRow
from ._types import Status, StepKind, check_workflow_id, to_seconds

if TYPE_CHECKING:
    from ._app import App

__all__ = [
    "EventFuture",
    "MessageFuture",
    "Promise",
    "close_stream",
    "event",
    "get_event",
    "get_event_outside",
    "message",
    "promise",
    "read_stream_outside",
    "recv",
    "send",
    "send_outside",
    "set_event",
    "settle_promise",
    "write_stream",
]

T = TypeVar("T")

STREAM_PAGE = 500
"""Stream items read per query by ``read_stream``."""


def _topic(topic: object) -> str:
    """The stored topic: ``None`` is the default topic, stored as ``""``."""
    if topic is None:
        return ""
    if not isinstance(topic, str):
        raise TypeError(f"a message topic is a str or None, not {type(topic).__name__} "
                        f"({topic!r:.60})")
    return topic


def _key(key: object, what: str) -> str:
    if not isinstance(key, str) or not key:
        raise TypeError(f"{what} must be a non-empty str, got {key!r:.60}")
    return key


def _hint(type_: Any) -> Any:
    return Any if type_ is None else type_


def _received(run: WorkflowRun, row: StepRow, hint: Any, what: str) -> Outcome:
    """The value a receive took (its step row), read as ``hint`` (see ``_explained``)."""
    return _explained(run.runtime.steps.replay(row, hint), row, hint, what)


def _explained(outcome: Outcome, row: StepRow, hint: Any, what: str) -> Outcome:
    """``outcome``, with a failure to read ``row``'s value as ``type=`` told as what it is.

    That value was sent (or set, or resolved) in another shape: the codec's own text blames a
    change of type since recording, which misleads here. A replay gets the same error, so a
    first run and a replay agree.
    """
    if isinstance(outcome.error, SerializationError) and row.output is not None:
        cause = outcome.error.__context__  # the converter's own complaint
        return Outcome(error=SerializationError(
            f"{what} is {row.output[:80]!r}, which cannot be read as type={hint!r} "
            f"({cause or outcome.error}); it is taken (step {row.step} of "
            f"{row.workflow_id!r}) and not read again. Make the sender pass that shape, or "
            "receive without type= and convert the value yourself."))
    return outcome


def _step_row(run: WorkflowRun, step: int, kind: StepKind, name: str,
              output: bytes | None, *, finished: bool = True) -> StepRow:
    runtime = run.runtime
    now = runtime.clock.now()
    return StepRow(run.workflow_id, step, kind, name, output, None, None, now,
                   now if finished else None, runtime.steps.sites.get((run.workflow_id, step)))


def _fire(run: WorkflowRun, point: str, step: int, name: str) -> None:
    """Crash point ``point`` (crash tests only: callers check ``faults.callback`` first)."""
    run.runtime.faults.fire(point, workflow_id=run.workflow_id, step=step, name=name)


# -- messages -------------------------------------------------------------------------------


class MessageFuture(ExternalFuture[T]):
    """The next message on ``topic`` for this workflow (``ld.message``)."""

    __slots__ = ("topic",)

    def __init__(self, run: WorkflowRun, step: int, topic: str, hint: Any,
                 taken: Outcome | None = None) -> None:
        super().__init__(run, step, hint, taken)
        self.topic = topic

    def _refresh(self) -> None:
        run = self._run
        runtime = run.runtime
        row = _step_row(run, self.step, StepKind.MESSAGE, self.topic, None, finished=False)
        crash_tests = runtime.faults.callback is not None
        if crash_tests:
            _fire(run, "before_receive", self.step, self.topic)
        payload = runtime.storage.take_message(run.workflow_id, self.topic, row, runtime.owner,
                                               open_row=False)
        if payload is not None:
            if crash_tests:
                _fire(run, "after_receive", self.step, self.topic)
            self._taken = _received(run, row._replace(output=payload), self._hint,
                                    f"the message on topic {self.topic!r}")

    def _probe(self) -> bool:
        run = self._run
        return self.topic in run.runtime.storage.unread_topics(run.workflow_id)

    def __repr__(self) -> str:
        state = "done" if self._settled() else "pending"
        return f"<MessageFuture step={self.step} topic={self.topic!r} {state}>"


def message(topic: str | None = None, *, type: Any = None) -> Future[Any]:
    """The next message on ``topic`` as a durable future (raceable in ``select``).

    Consumes the oldest unread message on the topic if there is one now, else the first to
    arrive while the workflow waits on this future. ``type`` reads the message as that type
    (a dataclass, an enum, ...), as a step's return hint does.
    """
    run = current_run("message")
    name, hint = _topic(topic), _hint(type)
    runtime = run.runtime

    def replay(step: int, row: StepRow) -> MessageFuture[Any]:
        if row.finished_at is None:  # it was waiting, and nothing has been consumed for it
            return MessageFuture(run, step, name, hint)
        return MessageFuture(run, step, name, hint,
                             _received(run, row, hint, f"the message on topic {name!r}"))

    def live(step: int) -> MessageFuture[Any]:
        row = _step_row(run, step, StepKind.MESSAGE, name, None, finished=False)
        crash_tests = runtime.faults.callback is not None
        if crash_tests:
            _fire(run, "before_receive", step, name)
        payload = runtime.storage.take_message(run.workflow_id, name, row, runtime.owner,
                                               open_row=True)
        if crash_tests and payload is not None:
            _fire(run, "after_receive", step, name)
        taken = None if payload is None else _received(
            run, row._replace(output=payload), hint, f"the message on topic {name!r}")
        return MessageFuture(run, step, name, hint, taken)

    return run.journaled(StepKind.MESSAGE, name, replay, live)


def recv(topic: str | None = None, *, timeout: float | timedelta | None = None,
         type: Any = None) -> Any:
    """The oldest unread message on ``topic``, waiting for one if there is none.

    Raises:
        WaitTimeoutError: ``timeout`` passed first (recorded; the message that arrives later
            stays for the next receive).
    """
    current_run("recv")
    return message(topic, type=type).result(timeout=timeout)


def send(workflow_id: str, message: Any, *, topic: str | None = None) -> None:
    """Send ``message`` to workflow ``workflow_id``'s mailbox, exactly once.

    The message and this workflow's step record commit together: a replay sends nothing.

    Raises:
        WorkflowNotFoundError: there is no such workflow (recorded: a replay raises it too).
        SerializationError: the message cannot be stored (nothing recorded).
    """
    run = current_run("send")
    destination, name = check_workflow_id(workflow_id), _topic(topic)
    runtime = run.runtime
    payload = runtime.codec.encode(message, f"the message workflow {run.workflow_id!r} sends "
                                            f"to {destination!r}")

    def live(step: int) -> Outcome:
        row = _step_row(run, step, StepKind.SEND, destination, b"null")
        crash_tests = runtime.faults.callback is not None
        if crash_tests:
            _fire(run, "before_send", step, destination)
        sent = runtime.storage.send_message(
            destination=destination, topic=name, payload=payload, now=row.started_at,
            key=f"{run.workflow_id}:{step}", sender=run.workflow_id, step=row,
            owner=runtime.owner)
        if sent is None:
            missing = WorkflowNotFoundError(
                f"workflow {run.workflow_id!r} sends a message to workflow {destination!r}, "
                "which does not exist (check the id, or start that workflow first)")
            runtime.steps.record(run.workflow_id, step, StepKind.SEND, destination, None, Any,
                                 error=missing)
            return Outcome(error=missing)
        runtime.delivered(destination)
        if crash_tests:
            _fire(run, "after_send", step, destination)
        return Outcome(value=None)

    run.journaled(StepKind.SEND, destination,
                  lambda _, row: runtime.steps.replay(row, Any), live).get()


def send_outside(app: App, workflow_id: str, message: Any, *, topic: str | None,
                 idempotency_key: str | None) -> bool:
    """``app.send`` from outside any workflow; True if delivered, False if deduplicated."""
    destination, name = check_workflow_id(workflow_id), _topic(topic)
    if idempotency_key is not None and (not isinstance(idempotency_key, str)
                                        or not idempotency_key):
        raise TypeError(f"idempotency_key must be a non-empty str or None, got "
                        f"{idempotency_key!r:.60}")
    storage, runtime = app._parts()
    payload = app.codec.encode(message, f"the message sent to workflow {destination!r}")
    sent = storage.send_message(destination=destination, topic=name, payload=payload,
                                now=app.clock.now(), key=idempotency_key)
    if sent is None:
        raise WorkflowNotFoundError(
            f"no workflow with id {destination!r} in {storage.path} to send a message to "
            "(check the id, or start the workflow first)")
    if sent:
        runtime.delivered(destination)
    return sent


# -- events ---------------------------------------------------------------------------------


class EventFuture(ExternalFuture[T]):
    """Event ``key`` of workflow ``target``, once it is set (``ld.event``)."""

    __slots__ = ("key", "target")

    def __init__(self, run: WorkflowRun, step: int, target: str, key: str, hint: Any,
                 taken: Outcome | None = None) -> None:
        super().__init__(run, step, hint, taken)
        self.target = target
        self.key = key

    def _refresh(self) -> None:
        run = self._run
        runtime = run.runtime
        value = runtime.storage.get_event(self.target, self.key)
        if value is not None:
            name = _event_name(self.target, self.key)
            self._taken = _explained(runtime.steps.record_copy(
                run.workflow_id, self.step, StepKind.EVENT, name, value, None, self._hint),
                _step_row(run, self.step, StepKind.EVENT, name, value), self._hint,
                f"event {self.key!r} of workflow {self.target!r}")

    def _probe(self) -> bool:
        return self._run.runtime.storage.get_event(self.target, self.key) is not None


def _event_name(target: str, key: str) -> str:
    return f"{target}:{key}"


def set_event(key: str, value: Any) -> None:
    """Publish ``value`` as this workflow's event ``key`` (the latest value wins)."""
    run = current_run("set_event")
    name = _key(key, "an event key")
    runtime = run.runtime
    payload = runtime.codec.encode(value, f"event {name!r} of workflow {run.workflow_id!r}")

    def live(step: int) -> None:
        row = _step_row(run, step, StepKind.SET_EVENT, name, payload)
        runtime.storage.set_event(run.workflow_id, name, payload, row.started_at, row,
                                  runtime.owner)
        runtime.delivered(run.workflow_id)

    run.journaled(StepKind.SET_EVENT, name, lambda _, row: None, live)


def event(workflow_id: str, key: str, *, type: Any = None) -> Future[Any]:
    """Workflow ``workflow_id``'s event ``key`` as a durable future: it settles once the
    event is set, with the value it has then (recorded, so replay sees the same value).

    It waits even while no workflow has that id (one may be started later, by anyone); race
    it with a timer, or use ``ld.get_event(..., timeout=)``, to bound the wait.
    """
    run = current_run("event")
    target, name = check_workflow_id(workflow_id), _key(key, "an event key")
    hint, runtime = _hint(type), run.runtime
    step_name = _event_name(target, name)
    runtime.wake_on_outcome(run.workflow_id, target)  # ``delivered(target)`` wakes this run

    def replay(step: int, row: StepRow) -> EventFuture[Any]:
        if row.finished_at is None:
            return EventFuture(run, step, target, name, hint)
        return EventFuture(run, step, target, name, hint,
                           _received(run, row, hint, f"event {name!r} of workflow {target!r}"))

    def live(step: int) -> EventFuture[Any]:
        value = runtime.storage.get_event(target, name)
        if value is None:
            runtime.steps.record(run.workflow_id, step, StepKind.EVENT, step_name, None, Any,
                                 open_row=True)
            return EventFuture(run, step, target, name, hint)
        taken = _explained(
            runtime.steps.record_copy(run.workflow_id, step, StepKind.EVENT, step_name,
                                      value, None, hint),
            _step_row(run, step, StepKind.EVENT, step_name, value), hint,
            f"event {name!r} of workflow {target!r}")
        return EventFuture(run, step, target, name, hint, taken)

    return run.journaled(StepKind.EVENT, step_name, replay, live)


def get_event(workflow_id: str, key: str, *, timeout: float | timedelta | None = None,
              type: Any = None) -> Any:
    """Workflow ``workflow_id``'s event ``key``, waiting until it is set (recorded).

    Raises:
        WaitTimeoutError: ``timeout`` passed first (recorded).
    """
    current_run("get_event")
    return event(workflow_id, key, type=type).result(timeout=timeout)


def get_event_outside(app: App, workflow_id: str, key: str, *,
                      timeout: float | timedelta | None, type: Any) -> Any:
    """``app.get_event`` outside workflows: wait (real time) until the event is set."""
    target, name = check_workflow_id(workflow_id), _key(key, "an event key")
    limit = None if timeout is None else time.monotonic() + to_seconds(timeout, "timeout")
    storage, runtime = app._parts()
    seen = runtime.outside_waiting(+1)
    try:
        while True:
            row = storage.get_workflow(target)  # before the event: one set before it ended shows
            value = storage.get_event(target, name)
            if value is not None:
                return app.codec.decode(value, _hint(type),
                                        f"event {name!r} of workflow {target!r}")
            if row is None:
                raise WorkflowNotFoundError(f"no workflow with id {target!r} in {storage.path}")
            if Status(row.status).is_terminal:  # nothing can set it now: waiting would hang
                raise EventNotSetError(
                    f"workflow {target!r} ended ({row.status}) without setting event {name!r}; "
                    "it can only be set if the workflow is resumed (app.resume), so nothing "
                    "waits for it")
            seen = _wait_outside(app, seen, limit,
                                 f"event {name!r} of workflow {target!r} was not set")
    finally:
        runtime.outside_waiting(-1)


def _wait_outside(app: App, seen: int, limit: float | None, what: str) -> int:
    """Wait for a commit that may matter (see ``Runtime.changes``); the new sequence."""
    _, runtime = app._parts()
    remaining = None if limit is None else limit - time.monotonic()
    if remaining is not None and remaining <= 0:
        raise WaitTimeoutError(f"{what} within the timeout")
    runtime.wait_for_change(seen, remaining)
    app._parts()  # closed meanwhile: say so
    with runtime.changes:
        return runtime.change_seq


# -- streams --------------------------------------------------------------------------------


def write_stream(key: str, value: Any) -> int:
    """Append ``value`` to this workflow's stream ``key``; returns its position (0, 1, ...).

    Readers (``app.read_stream``) see it as soon as it commits, in any process.

    Raises:
        UsageError: the stream was closed.
    """
    run = current_run("write_stream")
    name = _key(key, "a stream key")
    runtime = run.runtime
    payload = runtime.codec.encode(value, f"an item of stream {name!r} of workflow "
                                          f"{run.workflow_id!r}")

    def live(step: int) -> int:
        row = _step_row(run, step, StepKind.WRITE_STREAM, name, None)
        position = runtime.storage.write_stream(run.workflow_id, name, payload,
                                                row.started_at, row, runtime.owner)
        if position is None:
            raise UsageError(
                f"workflow {run.workflow_id!r} writes to stream {name!r} after closing it; "
                "write every item before ld.close_stream()")
        runtime.changed()
        return position

    return run.journaled(StepKind.WRITE_STREAM, name,
                         lambda _, row: int(runtime.steps.replay(row, int).get()), live)


def close_stream(key: str) -> None:
    """Close this workflow's stream ``key``: readers end after its last item (idempotent)."""
    run = current_run("close_stream")
    name = _key(key, "a stream key")
    runtime = run.runtime

    def live(step: int) -> None:
        row = _step_row(run, step, StepKind.CLOSE_STREAM, name, b"null")
        if runtime.storage.write_stream(run.workflow_id, name, None, row.started_at, row,
                                        runtime.owner) is None:
            runtime.steps.record(run.workflow_id, step, StepKind.CLOSE_STREAM, name, None, Any)
        runtime.changed()

    run.journaled(StepKind.CLOSE_STREAM, name, lambda _, row: None, live)


def read_stream_outside(app: App, workflow_id: str, key: str, *, offset: int,
                        timeout: float | timedelta | None, type: Any) -> Iterator[Any]:
    """``app.read_stream``: the stream's items from ``offset`` on, following live writes.

    Ends after the last item once the stream is closed or its workflow has ended. ``timeout``
    bounds each wait for the next item (``WaitTimeoutError``).
    """
    target, name = check_workflow_id(workflow_id), _key(key, "a stream key")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ValueError(f"offset must be an int >= 0, got {offset!r:.60}")
    seconds = None if timeout is None else to_seconds(timeout, "timeout")
    hint = _hint(type)
    storage, _ = app._parts()
    if storage.get_workflow(target) is None:  # refused now, not at the first next()
        raise WorkflowNotFoundError(f"no workflow with id {target!r} in {storage.path}")

    def items() -> Iterator[Any]:
        position = offset
        storage, runtime = app._parts()
        seen = runtime.outside_waiting(+1)
        try:
            limit = None if seconds is None else time.monotonic() + seconds
            while True:
                row = storage.get_workflow(target)  # before the items: none written after it
                found, closed = storage.read_stream(target, name, position, STREAM_PAGE)
                for at, value in found:
                    yield app.codec.decode(value, hint,
                                           f"item {at} of stream {name!r} of {target!r}")
                    position = at + 1
                if found:
                    limit = None if seconds is None else time.monotonic() + seconds
                    continue
                if closed or row is None or Status(row.status).is_terminal:
                    return
                seen = _wait_outside(app, seen, limit,
                                     f"no item came on stream {name!r} of workflow {target!r}")
        finally:
            runtime.outside_waiting(-1)

    return items()


# -- promises -------------------------------------------------------------------------------


class Promise(ExternalFuture[T]):
    """A durable promise (``ld.promise()``): settled once, from anywhere, by its ``id``.

    Give ``id`` to whoever will settle it (a webhook URL, an approval e-mail); they call
    ``app.resolve(id, value)`` or ``app.reject(id, message)``, in any process on the file,
    while this workflow runs or while it is down. It is the same id on every replay.
    """

    __slots__ = ("id",)

    def __init__(self, run: WorkflowRun, step: int, promise_id: str, hint: Any) -> None:
        super().__init__(run, step, hint)
        self.id = promise_id

    def _refresh(self) -> None:
        run = self._run
        runtime = run.runtime
        row = runtime.storage.get_promise(self.id)
        if row is not None and row.workflow_id != run.workflow_id:
            # A fork replays its source's promise, with the source's id: a settlement here
            # wakes the source (``delivered``), so this run must be woken with it.
            runtime.wake_on_outcome(run.workflow_id, row.workflow_id)
        if row is None or row.settled_at is None:
            return
        if row.error is not None:
            self._taken = Outcome(error=runtime.codec.decode_error(row.error))
            return
        assert row.output is not None
        self._taken = _received(
            run, StepRow(row.workflow_id, row.step, StepKind.PROMISE, "promise",
                               row.output, None, None, row.created_at, row.settled_at),
            self._hint, f"the value resolving promise {self.id!r}")

    def _probe(self) -> bool:
        row = self._run.runtime.storage.get_promise(self.id)
        return row is not None and row.settled_at is not None

    def __repr__(self) -> str:
        state = "done" if self._settled() else "pending"
        return f"<Promise {self.id} step={self.step} {state}>"


def promise(*, type: Any = None) -> Promise[Any]:
    """A new durable promise of this workflow; see ``Promise``."""
    run = current_run("promise")
    hint, runtime = _hint(type), run.runtime

    def replay(step: int, row: StepRow) -> Promise[Any]:
        return Promise(run, step, str(runtime.steps.replay(row, str).get()), hint)

    def live(step: int) -> Promise[Any]:
        promise_id = str(uuid.uuid4())
        row = _step_row(run, step, StepKind.PROMISE, "promise",
                        runtime.codec.encode(promise_id, "a promise id"))
        runtime.storage.create_promise(promise_id, run.workflow_id, row.started_at, row,
                                       runtime.owner)
        return Promise(run, step, promise_id, hint)

    return run.journaled(StepKind.PROMISE, "promise", replay, live)


def settle_promise(app: App, promise_id: str, *, value: Any = None,
                   rejection: str | None = None) -> bool:
    """``app.resolve``/``app.reject``: settle the promise unless it is settled already."""
    if not isinstance(promise_id, str) or not promise_id:
        raise TypeError(f"a promise id is a non-empty str (Promise.id), got {promise_id!r:.60}")
    storage, runtime = app._parts()
    output = error = None
    if rejection is None:
        output = app.codec.encode(value, f"the value resolving promise {promise_id!r}")
    else:
        if not isinstance(rejection, str):
            raise TypeError(f"a rejection message is a str, not {type(rejection).__name__}")
        error = app.codec.encode_error(PromiseRejectedError(
            f"promise {promise_id!r} was rejected: {rejection}"))
    found = storage.settle_promise(promise_id, output=output, error=error,
                                   now=app.clock.now())
    if found is None:
        raise PromiseNotFoundError(
            f"no promise with id {promise_id!r} in {storage.path}: pass the id of a "
            "Promise a workflow made with ld.promise() (Promise.id)")
    row, settled = found
    if settled:
        runtime.delivered(row.workflow_id)
    return settled
