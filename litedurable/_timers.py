"""The timer thread: one thread per App that calls actions when the clock reaches them.

Every durable sleep, select timeout, workflow deadline and suspended wake-up of an App rides
on it, so no exception ends it: a failure (a timer action, or a custom ``Clock`` that raises)
is logged and the loop goes on; a second failure in a row backs off briefly so that a clock
that always raises costs a log line per second, not a busy CPU.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

from ._clock import Clock
from ._errors import AppClosedError
from ._faults import Faults

__all__ = ["Timers"]

log = logging.getLogger("litedurable")


class Timers:
    """A heap of (deadline, action) served by the ``litedurable-timer`` thread.

    ``_cond`` guards the heap and ``_stopped``; actions run outside it, in the timer thread,
    so an action may add timers. Actions must be quick (they notify or schedule).
    """

    def __init__(self, clock: Clock, faults: Faults) -> None:
        self.clock = clock
        self.faults = faults
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()  # ties break by insertion: actions are not comparable
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="litedurable-timer", daemon=True)
        self._thread.start()

    def add(self, deadline: float, action: Callable[[], None]) -> None:
        """Call ``action`` on the timer thread once the clock reaches ``deadline``."""
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._seq), action))
            self._cond.notify()

    def stop(self, timeout: float) -> None:
        """Stop the thread (pending timers are dropped) and join it for ``timeout`` seconds."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _loop(self) -> None:
        failures = 0
        while not self._stopped:
            try:
                self._fire_due()
                failures = 0
            except BaseException as exc:
                if self.faults.dead:
                    return
                failures += 1
                log.error("litedurable: the timer thread hit an error and carries on: %r", exc,
                          exc_info=failures == 1)
                if failures > 1:
                    time.sleep(min(1.0, 0.01 * failures))

    def _fire_due(self) -> None:
        """Wait for the earliest timer (or a new one), then run every action that is due."""
        due: list[Callable[[], None]] = []
        with self._cond:
            if self._stopped:
                return
            now = self.clock.now()
            while self._heap and self._heap[0][0] <= now:
                due.append(heapq.heappop(self._heap)[2])
            if not due:
                self.clock.wait(self._cond, self._heap[0][0] if self._heap else None)
        for action in due:
            try:
                action()
            except BaseException as exc:
                if not self.faults.dead and not isinstance(exc, AppClosedError):
                    log.warning("litedurable: a timer action failed: %r", exc)
