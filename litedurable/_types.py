"""Plain records shared by every layer: statuses, retry policies, journal views.

Standard library only, so the journal, the runtime and the CLI can all speak them.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ._errors import InvalidIdError

__all__ = [
    "MAX_ID_LENGTH", "QueueInfo", "Retry", "ScheduleInfo", "Status", "StepInfo", "StepKind",
    "WorkflowInfo",
    "check_seconds", "check_workflow_id", "to_seconds",
]


class Status(enum.StrEnum):
    """Where a workflow is in its life. Stored as these exact strings."""

    PENDING = "pending"
    """Running, sleeping, waiting, or waiting to be recovered."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    NONDETERMINISTIC = "nondeterministic"
    """Parked: replay met a call that differs from the journal. Fix the code, then resume."""
    EXHAUSTED = "exhausted"
    """Parked: recovered ``max_recovery_attempts`` times without progress."""
    ENQUEUED = "enqueued"
    """Waiting in a queue (``q.enqueue``); becomes ``pending`` when a consumer dequeues it."""

    @property
    def is_terminal(self) -> bool:
        """True for every status but ``enqueued`` and ``pending``: nothing will run the
        workflow any more (unless it is resumed)."""
        return self is not Status.PENDING and self is not Status.ENQUEUED


class StepKind(enum.StrEnum):
    """What kind of journaled call a step row records; replay checks it."""

    STEP = "step"
    """A decorated step called inline, or ``ld.run``."""
    GO = "go"
    SELECT = "select"
    AS_COMPLETED = "as_completed"
    SLEEP = "sleep"
    AFTER = "after"
    NOW = "now"
    UUID = "uuid4"
    RANDOM = "random"
    CHILD = "child"
    """``app.start`` inside a workflow; the output is the child's id."""
    WAIT = "wait"
    """A workflow waited for another workflow's outcome (a child handle's ``result``)."""
    CANCEL = "cancel"
    """A workflow cancelled another (``handle.cancel()`` inside a workflow)."""
    SEND = "send"
    """``ld.send``: the message row commits with this step row."""
    MESSAGE = "message"
    """``ld.message``/``ld.recv``: the output is the message consumed (open until then)."""
    SET_EVENT = "set_event"
    """``ld.set_event``: the output is the value set."""
    EVENT = "event"
    """``ld.event``/``ld.get_event``: the output is the value seen (open until set)."""
    WRITE_STREAM = "write_stream"
    """``ld.write_stream``: the output is the item's position."""
    CLOSE_STREAM = "close_stream"
    PROMISE = "promise"
    """``ld.promise``: the output is the promise id (its outcome is in the promise row)."""


def to_seconds(delay: float | timedelta, what: str = "delay") -> float:
    """Normalize a user delay to float seconds, refusing negatives, NaN and infinity.

    Infinity is refused rather than read as "forever": every delay becomes an absolute
    deadline stored in the journal, and "no deadline" is spelled ``None`` where it is allowed.
    """
    if isinstance(delay, timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, int | float) and not isinstance(delay, bool):
        try:
            seconds = float(delay)
        except OverflowError:  # an int too big for a float
            seconds = math.inf
    else:
        raise TypeError(
            f"{what} must be float seconds or a datetime.timedelta, not {type(delay).__name__}"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(
            f"{what} must be a finite, non-negative number of seconds, got {delay!r:.40}"
            + ("; pass None for no limit where one is optional" if seconds == math.inf else "")
        )
    return seconds


def _as_float(value: object) -> float:
    """``value`` as a float; NaN for anything that is not a real number (bools included)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an int too big for a float
            return math.inf
    return math.nan


def check_seconds(
    value: object, what: str, *, positive: bool = False, maximum: float = math.inf
) -> None:
    """Refuse a duration that is not a finite real number of seconds in range.

    ``positive`` refuses 0 as well; ``maximum`` bounds settings that become a thread's wait,
    since no platform waits longer than ``threading.TIMEOUT_MAX`` in one call.
    """
    seconds = _as_float(value)
    if (not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0)
            or seconds > maximum):
        bound = "> 0" if positive else ">= 0"
        limit = "" if maximum == math.inf else f" and at most {maximum:,.0f}"
        raise ValueError(
            f"{what} must be a finite number of seconds {bound}{limit}, got {value!r:.40}"
        )


@dataclass(frozen=True, slots=True)
class Retry:
    """How often and how patiently a step is retried when it raises.

    Attempt ``k`` (1-based) that fails waits ``min(initial * backoff**(k-1), max_interval)``
    seconds on the App's clock before attempt ``k+1``; there is no wait after the last attempt,
    whose exception then reaches the workflow unwrapped. Attempt counts live in memory: a crash
    restarts the count, as in DBOS.

    Args:
        max_attempts: total attempts including the first (>= 1).
        initial: delay after the first failure, seconds.
        backoff: multiplier applied per further failure (>= 1).
        max_interval: cap on any single delay, seconds.
        retry_on: exception types worth retrying; anything else fails at once.
    """

    max_attempts: int = 3
    initial: float = 0.1
    backoff: float = 2.0
    max_interval: float = 10.0
    retry_on: tuple[type[BaseException], ...] = field(default=(Exception,))

    def __post_init__(self) -> None:
        attempts = self.max_attempts
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
            raise ValueError(f"Retry.max_attempts must be an int >= 1, got {attempts!r}")
        check_seconds(self.initial, "Retry.initial")
        check_seconds(self.max_interval, "Retry.max_interval")
        backoff = _as_float(self.backoff)
        if not math.isfinite(backoff) or backoff < 1:
            raise ValueError(
                f"Retry.backoff must be a finite number >= 1, got {self.backoff!r:.40}"
            )
        retry_on = self.retry_on
        if isinstance(retry_on, type):
            retry_on = (retry_on,)
            object.__setattr__(self, "retry_on", retry_on)
        if not isinstance(retry_on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in retry_on
        ):
            raise TypeError("Retry.retry_on must be a tuple of exception classes")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based); never NaN or infinite."""
        try:
            grown = self.initial * self.backoff ** (attempt - 1)
        except OverflowError:  # backoff ** attempt past the float range: the cap applies
            return 0.0 if self.initial == 0 else float(self.max_interval)
        return float(min(grown, self.max_interval))

    def should_retry(self, attempt: int, error: BaseException) -> bool:
        """Whether failed attempt ``attempt`` earns another try."""
        return attempt < self.max_attempts and isinstance(error, self.retry_on)


@dataclass(frozen=True, slots=True)
class StepInfo:
    """One journal row of a workflow, as ``app.steps(id)`` returns it.

    ``output`` is the decoded JSON value (not structured back to a class: the reader may not
    have the workflow's code). ``error`` is ``"Type: message"`` for a failed step. For a select,
    ``candidates`` holds the candidates' step numbers and ``winner`` the winning index
    (-1 when the select's timeout won). ``started_at`` is when the call was made (a retried
    step: its first attempt).
    """

    workflow_id: str
    step: int
    kind: str
    name: str
    output: Any
    error: str | None
    started_at: datetime
    finished_at: datetime | None
    candidates: Sequence[int] | None = None
    winner: int | None = None
    site: str | None = None
    """Where the workflow made the call, ``"file.py:23"`` (None in journals before schema 7)."""
    owner: str | None = None
    """The owner (``host:pid:token``) whose run recorded this row."""
    attempts: Sequence[tuple[datetime, datetime, str]] = ()
    """A retried step's failed attempts: (start, end, ``"Type: message"``), in order."""


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    """One workflow as ``app.list_workflows()`` returns it."""

    workflow_id: str
    name: str
    status: Status
    created_at: datetime
    updated_at: datetime
    app_version: str
    parent_id: str | None
    owner: str | None
    recovery_attempts: int
    error: str | None


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """One cron schedule as ``app.list_schedules()`` returns it.

    ``last_fire`` is the latest firing started by any process; ``next_fire`` the next one due
    (None while paused). Both are aware datetimes in the schedule's time zone.
    """

    name: str
    workflow: str
    cron: str
    tz: str | None
    catch_up: bool
    paused: bool
    last_fire: datetime | None
    next_fire: datetime | None


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """One queue as ``app.list_queues()`` returns it: its limits (as last declared by any
    App) and what is in it now, counted across every process on the file.

    ``rate_limit`` is ``(n, per_seconds)``; ``started_last_minute`` counts dequeues in the
    60 seconds before the read; ``oldest_enqueued_at`` is when the longest-waiting workflow
    was put in the queue (enqueued, or put back by a resume or a recovery; None when nothing
    waits).
    """

    name: str
    concurrency: int | None
    worker_concurrency: int | None
    rate_limit: tuple[int, float] | None
    partitioned: bool
    enqueued: int
    running: int
    started_last_minute: int
    oldest_enqueued_at: datetime | None


MAX_ID_LENGTH = 512


def check_workflow_id(workflow_id: object, what: str = "workflow_id") -> str:
    """Return ``workflow_id`` if it can be stored and shown; else ``InvalidIdError`` (its
    message calls the value ``what``: a queue name follows the same rules)."""
    if not isinstance(workflow_id, str):
        raise InvalidIdError(
            f"{what} must be a str, not {type(workflow_id).__name__} ({workflow_id!r:.60}); "
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
            f"{what} {workflow_id[:60]!r} {problem}; use a non-empty text id of at most "
            f"{MAX_ID_LENGTH} characters"
        )
    return workflow_id
