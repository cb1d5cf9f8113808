"""Cron schedules: when a schedule fires, and the thread that starts its firings.

A schedule is a journal row (name, workflow, cron, time zone, catch-up, paused, last fire), so
it survives restarts and every process on the file sees it. Each launched App that registers
the schedule's workflow runs a ``Scheduler``; they all compute the same fire times and start
the firing under the id ``"<name>@<fire time, ISO 8601>"``. Starting an id that exists is a
no-op, so each firing runs exactly once however many processes race for it.

Missed firings: a scheduler starts a schedule's firings from when it began to run it (the App's
launch, or the schedule's creation or unpausing if later), so firings due while nothing ran are
skipped, unless the schedule has ``catch_up``: then it starts from the schedule's last fire and
starts the missed firings, at most ``CATCH_UP_LIMIT`` of them (the latest). A running scheduler
starts every firing that came due, however late its thread wakes.

Daylight saving time, as Vixie cron does it: a wall-clock time skipped by a spring-forward
fires at the first instant after the gap; a wall-clock time that occurs twice in a fall-back
fires once (the first time) when the expression names fixed hours, and at both instants when
its hour field is ``*`` (an interval schedule keeps its interval in real time).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from ._clock import Clock
from ._errors import AppClosedError
from ._journal import Journal, ScheduleRow

__all__ = ["CATCH_UP_LIMIT", "Cron", "Scheduler"]

log = logging.getLogger("litedurable")

CATCH_UP_LIMIT = 100
"""Most missed firings a ``catch_up`` schedule starts at once (the latest ones)."""


class Cron:
    """A validated cron expression (5 fields, or 6 with seconds first) in a time zone.

    Raises:
        ValueError: the expression or the time zone is not valid; the message says which.
    """

    def __init__(self, expression: str, tz: str | None = None) -> None:
        if not isinstance(expression, str):
            raise TypeError(f"a cron expression is a str, not {type(expression).__name__}")
        fields = expression.split()
        if len(fields) not in (5, 6):
            raise ValueError(
                f"cron expression {expression!r} has {len(fields)} fields; write 5 (minute hour "
                "day-of-month month day-of-week) or 6 (seconds first), e.g. '*/15 * * * * *'"
            )
        self.expression = " ".join(fields)
        self.tz = tz
        self._seconds_first = len(fields) == 6
        try:
            croniter(self.expression, datetime(2000, 1, 1, tzinfo=UTC),
                     second_at_beginning=self._seconds_first)
        except (CroniterError, ValueError) as exc:
            raise ValueError(
                f"cron expression {expression!r} is not valid: {exc}. Fields: "
                f"{'second ' if self._seconds_first else ''}minute hour day-of-month month "
                "day-of-week"
            ) from None
        self.zone: tzinfo = UTC
        if tz is not None:
            try:
                self.zone = ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError, TypeError):
                raise ValueError(
                    f"time zone {tz!r} is not known here; use an IANA name such as "
                    "'Europe/Paris' or 'America/New_York' (None means UTC)"
                ) from None
        # Fixed hours: a wall-clock time repeated by a fall-back fires only once.
        self._fixed_hours = not fields[2 if self._seconds_first else 1].startswith("*")

    def __repr__(self) -> str:
        return f"Cron({self.expression!r}, tz={self.tz!r})"

    def _iter(self, epoch: float) -> croniter:
        start = datetime.fromtimestamp(epoch, self.zone)
        return croniter(self.expression, start, second_at_beginning=self._seconds_first)

    def _counts(self, fire: datetime) -> bool:
        """False for the second occurrence of a repeated wall time on a fixed-hours schedule."""
        return not (self._fixed_hours and fire.fold == 1
                    and fire.utcoffset() != fire.replace(fold=0).utcoffset())

    def after(self, epoch: float) -> datetime:
        """The first fire time strictly after ``epoch``, aware, in the schedule's zone."""
        it = self._iter(epoch)
        while True:
            fire: datetime = it.get_next(datetime)
            if self._counts(fire):
                return fire

    def between(self, start: float, end: float, limit: int) -> tuple[list[datetime], bool]:
        """Fire times in (``start``, ``end``], oldest first, at most the latest ``limit``.

        Returns them with True when older ones were left out. Walks backwards from ``end`` so
        the cost is bounded by ``limit`` however long the gap.
        """
        it = self._iter(end + 0.0005)  # get_prev is strict; this includes a fire at ``end``
        found: list[datetime] = []
        while True:
            fire: datetime = it.get_prev(datetime)
            if fire.timestamp() <= start:
                return found[::-1], False
            if not self._counts(fire):
                continue
            if len(found) == limit:
                return found[::-1], True
            found.append(fire)


class Scheduler:
    """The thread that starts the firings of every schedule whose workflow is known here.

    Args:
        journal: where schedules live.
        clock: the App's clock (fire times follow it, so tests drive them with a fake clock).
        known: whether a workflow name is registered on this App.
        fire: starts one firing (idempotently) and records it as the schedule's last fire.
    """

    def __init__(
        self,
        journal: Journal,
        clock: Clock,
        known: Callable[[str], bool],
        fire: Callable[[ScheduleRow, datetime], None],
    ) -> None:
        self._journal = journal
        self._clock = clock
        self._known = known
        self._fire = fire
        self._cond = threading.Condition()
        self._started = clock.now()
        self._poked = True  # the first tick reads the schedules at once
        self._stopping = False
        # name -> the fire time up to which this scheduler has started firings; None while
        # the schedule is paused (unpausing starts from "now": a pause is not an outage).
        self._cursors: dict[str, float | None] = {}
        self._crons: dict[tuple[str, str | None], Cron] = {}
        self._thread = threading.Thread(target=self._loop, name="litedurable-scheduler",
                                        daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Re-read the schedules now (one was added, paused, resumed or removed)."""
        with self._cond:
            self._poked = True
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()

    def cron(self, row: ScheduleRow) -> Cron:
        key = (row.cron, row.tz)
        cron = self._crons.get(key)
        if cron is None:
            cron = self._crons[key] = Cron(row.cron, row.tz)
        return cron

    def _loop(self) -> None:
        """Fire due schedules until stopped; no exception ends the thread (it is logged, and
        the next look comes a second later)."""
        wake: float | None = None
        while True:
            try:
                with self._cond:
                    while not self._poked and not self._stopping:
                        if wake is not None and self._clock.now() >= wake:
                            break
                        self._clock.wait(self._cond, wake)
                    if self._stopping:
                        return
                    self._poked = False
                wake = self._tick()
            except AppClosedError:
                return
            except BaseException as exc:
                if self._journal.frozen:  # a simulated crash: this App is dead
                    return
                log.warning("litedurable: the scheduler could not read or fire schedules: %r",
                            exc)
                try:
                    wake = self._clock.now() + 1.0
                except BaseException:  # a clock that raises: look again in a second anyway
                    wake = None
                    time.sleep(1.0)

    def _tick(self) -> float | None:
        """Start every firing that is due; return when the next one is."""
        now = self._clock.now()
        rows = {row.name: row for row in self._journal.schedules()}
        for name in [n for n in self._cursors if n not in rows]:
            del self._cursors[name]
        wake: float | None = None
        for row in rows.values():
            if not self._known(row.workflow):
                continue
            if row.paused:
                self._cursors[row.name] = None
                continue
            cron = self.cron(row)
            cursor = self._start_from(row)
            fires, skipped = cron.between(cursor, now, CATCH_UP_LIMIT)
            if skipped:
                log.warning("litedurable: schedule %r missed more than %d firings; starting the "
                            "latest %d", row.name, CATCH_UP_LIMIT, CATCH_UP_LIMIT)
            for fire in fires:
                if self._stopping:
                    return None
                self._fire(row, fire)
                cursor = fire.timestamp()
            self._cursors[row.name] = cursor
            due = cron.after(cursor).timestamp()
            wake = due if wake is None else min(wake, due)
        return wake

    def _start_from(self, row: ScheduleRow) -> float:
        """Where this scheduler's firings of ``row`` begin (exclusive)."""
        if row.name in self._cursors:
            cursor = self._cursors[row.name]
            return row.updated_at if cursor is None else cursor  # None: it was paused
        if row.catch_up and row.last_fire is not None:
            return row.last_fire
        return max(self._started, row.created_at)
