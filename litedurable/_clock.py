"""Injected time: every deadline, backoff and timer in litedurable reads a ``Clock``.

Durable deadlines are wall-clock epoch seconds (they must mean the same instant to the next
process that opens the file). Waiting goes through the clock too, so a ``FakeClock`` can wake
every waiter when a test moves time forward instead of sleeping.
"""

from __future__ import annotations

import inspect
import math
import threading
import time
import weakref
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

__all__ = ["MAX_WAIT", "Clock", "FakeClock", "SystemClock", "engine_clock", "to_datetime"]

MAX_WAIT = 3600.0
"""The longest single ``Condition.wait`` litedurable makes, in seconds.

A far-future deadline (``ld.sleep(1e12)``) would otherwise overflow the C timeout of
``Condition.wait`` (``OverflowError``). Every waiter loops on its own predicate and deadline,
so waking once an hour to look again costs nothing and keeps any deadline representable."""


@runtime_checkable
class Clock(Protocol):
    """What the engine needs from time."""

    def now(self) -> float:
        """Current wall-clock time, epoch seconds."""
        ...

    def wait(self, cond: threading.Condition, deadline: float | None,
             timeout: float | None = None) -> None:
        """Block on ``cond`` (which the caller holds) until notified or ``deadline`` passes.

        ``deadline`` is this clock's time; ``timeout`` caps the wait in real seconds (a run
        holds its thread for a real time before it suspends, whatever the clock says). May
        return early (spuriously); callers re-check their predicate in a loop.

        Clocks written before ``timeout`` existed (``wait(cond, deadline)``) still work: the
        engine calls them as they were called then (see ``engine_clock``).
        """
        ...


class SystemClock:
    """The real clock: ``time.time()`` and ``Condition.wait`` with a timeout."""

    def now(self) -> float:
        return time.time()

    def wait(self, cond: threading.Condition, deadline: float | None,
             timeout: float | None = None) -> None:
        wait = MAX_WAIT if deadline is None else max(0.0, deadline - time.time())
        cond.wait(min(wait, MAX_WAIT if timeout is None else max(0.0, timeout)))


class FakeClock:
    """A clock that moves only when a test says so.

    Every condition that waits on it is remembered (weakly); ``advance`` and ``set`` wake them
    all so each re-checks its deadline against the new time. No wake-up is missed: a waiter
    registers its condition while holding it, and ``advance`` notifies while holding it.

    Args:
        start: initial time, epoch seconds (default 2025-01-01T00:00:00Z).
    """

    def __init__(self, start: float | datetime = 1735689600.0) -> None:
        self._now = start.timestamp() if isinstance(start, datetime) else float(start)
        self._lock = threading.Lock()
        self._waiters: weakref.WeakSet[threading.Condition] = weakref.WeakSet()

    def now(self) -> float:
        with self._lock:
            return self._now

    def wait(self, cond: threading.Condition, deadline: float | None,
             timeout: float | None = None) -> None:
        with self._lock:
            self._waiters.add(cond)
            if deadline is not None and self._now >= deadline:
                return
        # A real-time cap keeps a forgotten advance() from hanging a test forever silently;
        # callers loop on their predicate, so an early return is harmless.
        cond.wait(1.0 if timeout is None else min(1.0, max(0.0, timeout)))

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake every waiter."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(
                f"FakeClock.advance() takes finite, non-negative seconds, not {seconds!r}"
            )
        with self._lock:
            self._now += seconds
        self._wake()

    def set(self, when: float | datetime) -> None:
        """Jump to ``when`` (epoch seconds or aware datetime) and wake every waiter."""
        epoch = when.timestamp() if isinstance(when, datetime) else float(when)
        if not math.isfinite(epoch):
            raise ValueError(f"FakeClock.set() takes a finite time, not {when!r}")
        with self._lock:
            self._now = epoch
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for cond in waiters:
            with cond:
                cond.notify_all()


class _TwoArgumentClock:
    """A user's clock whose ``wait`` predates ``timeout`` (``wait(cond, deadline)``), as the
    engine calls every clock now.

    The real-time cap is turned into a deadline on the clock, as litedurable did before the
    cap existed: for a clock that follows real time it is the same wait, and a fake clock's
    own real-time cap keeps the run's hold bounded as it did then.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def now(self) -> float:
        return self.clock.now()

    def wait(self, cond: threading.Condition, deadline: float | None,
             timeout: float | None = None) -> None:
        if timeout is not None:
            cap = self.clock.now() + max(0.0, timeout)
            deadline = cap if deadline is None else min(deadline, cap)
        self.clock.wait(cond, deadline)


def engine_clock(clock: Clock) -> Clock:
    """``clock``, or an adapter if its ``wait`` cannot take ``timeout`` (an older clock).

    Without it, a custom clock written to the protocol's two-argument ``wait`` raised a
    ``TypeError`` inside every workflow that waited, which recorded each of them as failed.
    """
    try:
        inspect.signature(clock.wait).bind(None, None, None)
    except TypeError:
        return _TwoArgumentClock(clock)
    except ValueError:  # no signature to read (a builtin): take it as today's protocol
        pass
    return clock


def to_datetime(epoch: float) -> datetime:
    """Epoch seconds to an aware UTC datetime (the only kind litedurable hands out)."""
    return datetime.fromtimestamp(epoch, tz=UTC)
