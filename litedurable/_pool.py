"""A bounded, lazily grown thread pool that can be shut down with a grace period.

``concurrent.futures.ThreadPoolExecutor`` keeps idle threads forever and cannot bound how long
shutdown waits; litedurable needs both (thread counts stay low when idle, and ``close()``
returns promptly even if a step body ignores cancellation).

Threads start each other. ``Thread.start()`` blocks its caller until the new thread has run
(two thread switches and a GIL round trip: 0.1 ms, and over 1 ms on a busy machine), so a workflow
that calls ``go`` 100 times in a row used to spend most of that loop starting threads, one
after the other. Instead a thread about to run work first starts up to ``SPAWN_FANOUT`` more
while queued work (its own item included) outnumbers idle and starting threads: that keeps
one spare thread ready for the next ``submit``, and a burst grows the pool as a tree of
overlapping starts. ``submit`` itself starts a thread only when no thread is idle or starting
(a cold pool, or a spare that was used up), so it rarely waits for a handshake.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["SPAWN_FANOUT", "WorkerPool"]

log = logging.getLogger("litedurable")

SPAWN_FANOUT = 2
"""The most threads a pool thread starts right before it takes an item. Two makes a burst's
start-up a binary tree (100 threads are 7 handshakes deep); one is a chain no faster than
starting them all from the submitter, and 4 or 8 measured no better than 2 while delaying
each starter's own item longer."""


class WorkerPool:
    """Run submitted callables on at most ``size`` threads.

    Threads start only when more work is queued than threads are idle or starting, and exit
    after ``idle_timeout`` seconds without work. A callable that raises is logged, never fatal
    to the thread (the engine catches its own errors; this is the last guard).

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
        self._threads: set[threading.Thread] = set()  # started or starting, not yet exited
        self._idle = 0
        self._starting = 0  # created threads that have not yet looked for work
        self._closed = False
        self._serial = 0

    def submit(self, fn: Callable[[], None]) -> bool:
        """Queue ``fn``; False (and nothing queued) once the pool is shut down.

        Starts a thread only if no thread is idle or starting: an idle thread is woken and a
        starting one will look at the queue, and either starts more if work still outnumbers
        them. So a burst of submissions pays at most one ``Thread.start`` here.

        Raises:
            RuntimeError: the operating system refused a new thread and none runs to take the
                work (it stays queued for the next thread).
        """
        with self._cond:
            if self._closed:
                return False
            self._queue.append(fn)
            if self._idle:
                self._cond.notify()
            thread = None if self._idle or self._starting else self._new_thread()
        if thread is not None:
            self._start(thread, caller_waits=True)
        return True

    def discard_queued(self) -> int:
        """Drop work not yet started; returns how many items were dropped."""
        with self._cond:
            dropped = len(self._queue)
            self._queue.clear()
            return dropped

    def _new_thread(self) -> threading.Thread | None:
        """A thread to start if queued work outnumbers idle and starting threads; else None.

        Called holding ``_cond``. Count queued work against idle threads, not "is anyone
        idle": a notified thread stays counted idle until it runs, so a burst would otherwise
        start no threads. The new thread counts as starting (and against ``size``) from here
        on, so nobody starts a second one for the same work.
        """
        if (self._closed or len(self._threads) >= self.size
                or len(self._queue) <= self._idle + self._starting):
            return None
        self._serial += 1
        thread = threading.Thread(target=self._work, name=f"{self.name}-{self._serial}",
                                  daemon=True)
        self._threads.add(thread)
        self._starting += 1
        return thread

    def _start(self, thread: threading.Thread, *, caller_waits: bool) -> None:
        try:
            thread.start()
        except RuntimeError:  # "can't start new thread": the OS is out of threads
            with self._cond:
                self._threads.discard(thread)
                self._starting -= 1
                self._cond.notify_all()
                alone = not self._threads
            if caller_waits and alone:
                raise  # nobody else will take the queued work: tell the submitter
            log.warning("litedurable: %s could not start a thread; %d run", self.name,
                        len(self._threads))

    def _work(self) -> None:
        me = threading.current_thread()
        with self._cond:
            self._starting -= 1
            if self._closed:  # shutdown() waits for starts to finish (not idle threads: no herd)
                self._cond.notify_all()
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
                # Before taking the item (it still counts as queued): the spare and the tree.
                spawn = [t for _ in range(SPAWN_FANOUT) if (t := self._new_thread()) is not None]
                fn = self._queue.popleft()
            for thread in spawn:
                self._start(thread, caller_waits=False)
            try:
                fn()
            except BaseException:  # the engine handles its own errors; never lose the thread
                log.exception("litedurable: unexpected error in %s", me.name)

    def shutdown(self, grace: float) -> list[str]:
        """Stop taking work, drop the queue and join threads for up to ``grace`` seconds.

        Returns the names of threads still running after the grace period (a body that does
        not return); they are daemon threads and cannot write to a closed journal.
        """
        deadline = time.monotonic() + grace
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()
            # A thread being started may not be joinable yet; it sees _closed and exits at
            # once, so this wait is a few thread switches long.
            while self._starting and (remaining := deadline - time.monotonic()) > 0:
                self._cond.wait(remaining)
            threads = list(self._threads)
        me = threading.current_thread()
        for thread in threads:
            if thread is not me and thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in threads if t is not me and (t.ident is None or t.is_alive())]
