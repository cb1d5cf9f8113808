"""A bounded, lazily grown thread pool that can be shut down with a grace period.

``concurrent.futures.ThreadPoolExecutor`` keeps idle threads forever and cannot bound how long
shutdown waits; litedurable needs both (thread counts stay low when idle, and ``close()``
returns promptly even if a step body ignores cancellation).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["WorkerPool"]

log = logging.getLogger("litedurable")


class WorkerPool:
    """Run submitted callables on at most ``size`` threads.

    Threads start only when more work is queued than threads are idle, and exit after
    ``idle_timeout`` seconds without work. A callable that raises is logged, never fatal to the
    thread (the engine catches its own errors; this is the last guard).

    Args:
        size: the most threads alive at once (>= 1).
        name: thread name prefix, shown in tracebacks and ``threading.enumerate()``.
        idle_timeout: seconds an idle thread waits for work before exiting.
    """

    def __init__(self, size: int, name: str, idle_timeout: float = 30.0) -> None:
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"{name} pool size must be an int >= 1, got {size!r}")
        self.size = size
        self.name = name
        self._idle_timeout = idle_timeout
        self._cond = threading.Condition()
        self._queue: deque[Callable[[], None]] = deque()
        self._threads: set[threading.Thread] = set()
        self._idle = 0
        self._closed = False
        self._serial = 0

    def submit(self, fn: Callable[[], None]) -> bool:
        """Queue ``fn``; False (and nothing queued) once the pool is shut down."""
        with self._cond:
            if self._closed:
                return False
            self._queue.append(fn)
            if self._idle:
                self._cond.notify()
            # Count queued work against idle threads, not "is anyone idle": a notified thread
            # stays counted idle until it runs, so a burst would otherwise start no threads.
            if len(self._queue) > self._idle and len(self._threads) < self.size:
                self._serial += 1
                thread = threading.Thread(
                    target=self._work, name=f"{self.name}-{self._serial}", daemon=True
                )
                self._threads.add(thread)
                thread.start()
            return True

    def discard_queued(self) -> int:
        """Drop work not yet started; returns how many items were dropped."""
        with self._cond:
            dropped = len(self._queue)
            self._queue.clear()
            return dropped

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                deadline = time.monotonic() + self._idle_timeout
                while not self._queue and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._idle += 1
                    self._cond.wait(remaining)
                    self._idle -= 1
                if not self._queue:
                    self._threads.discard(me)
                    self._cond.notify_all()
                    return
                fn = self._queue.popleft()
            try:
                fn()
            except BaseException:  # the engine handles its own errors; never lose the thread
                log.exception("litedurable: unexpected error in %s", me.name)

    def shutdown(self, grace: float) -> list[str]:
        """Stop taking work, drop the queue and join threads for up to ``grace`` seconds.

        Returns the names of threads still running after the grace period (a body that does
        not return); they are daemon threads and cannot write to a closed journal.
        """
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()
            threads = list(self._threads)
        deadline = time.monotonic() + grace
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in threads if t.is_alive() and t is not threading.current_thread()]
