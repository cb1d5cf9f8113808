"""Cron expressions: when a schedule fires (pure: no threads, no storage).

Daylight saving time, as Vixie cron does it: a wall-clock time skipped by a spring-forward
fires at the first instant after the gap; a wall-clock time that occurs twice in a fall-back
fires once (the first time) when the expression names fixed hours, and at both instants when
its hour field is ``*`` (an interval schedule keeps its interval in real time).
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

__all__ = ["Cron"]


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
