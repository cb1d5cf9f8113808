"""Schedules: the thread that starts the firings of cron schedules, once per firing.

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

"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from ._clock import Clock
from ._cron import Cron
from ._errors import AppClosedError, UsageError
from ._faults import Faults
from ._registry import WorkflowDef
from ._storage import ScheduleRow, Storage
from ._types import check_workflow_id

__all__ = ["CATCH_UP_LIMIT", "Scheduler", "schedule_row"]

log = logging.getLogger("litedurable")

CATCH_UP_LIMIT = 100
"""Most missed firings a ``catch_up`` schedule starts at once (the latest ones)."""


def schedule_row(definition: WorkflowDef, name: object, cron: str, tz: str | None,
                 catch_up: bool) -> ScheduleRow:
    """The row of a new schedule, every part checked now rather than at its first tick."""
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
    return ScheduleRow(name, definition.name, spec.expression, tz, bool(catch_up), False, None)


class Scheduler:
    """The thread that starts the firings of every schedule whose workflow is known here.

    Args:
        storage: where schedules live.
        clock: the App's clock (fire times follow it, so tests drive them with a fake clock).
        known: whether a workflow name is registered on this App.
        fire: starts one firing (idempotently) and records it as the schedule's last fire.
        faults: a killed App's scheduler stops quietly.
    """

    def __init__(
        self,
        storage: Storage,
        clock: Clock,
        known: Callable[[str], bool],
        fire: Callable[[ScheduleRow, datetime], None],
        faults: Faults,
    ) -> None:
        self._storage = storage
        self._faults = faults
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
                if self._faults.dead:  # a simulated crash: this App is dead
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
        rows = {row.name: row for row in self._storage.schedules()}
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
