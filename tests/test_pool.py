"""The worker pool under the engine: it grows to its size in a burst, the pool's own threads
start the others (not the submitter), a spare thread stays ready, and shutdown or a refused
thread start leave it consistent.

These tests drive ``WorkerPool`` directly, with no App. Thread starts are observed by wrapping
``threading.Thread.start`` (``_StartLog``); real time appears only as hang guards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from support import engine_thread_names, eventually

from litedurable._pool import WorkerPool

HANG = 20.0  # seconds before a wait that should never take long is declared a hang


def test_a_burst_of_work_grows_the_pool_to_its_size() -> None:
    pool = WorkerPool(8, "litedurable-burst")
    release = threading.Event()
    running = threading.Semaphore(0)

    def body() -> None:
        running.release()
        release.wait(30)

    try:
        warm = threading.Barrier(3)
        for _ in range(2):  # two threads that then sit idle
            pool.submit(lambda: warm.wait(30))
        warm.wait(30)
        for _ in range(20):  # more than the pool holds, submitted at once
            pool.submit(body)
        for _ in range(8):  # all eight run at the same time: a thread each
            assert running.acquire(timeout=10), "the burst did not start a thread per slot"
    finally:
        release.set()
        assert pool.shutdown(30) == []


class _StartLog:
    """Wraps ``threading.Thread.start`` to note which thread starts each pool thread.

    ``delay`` holds every pool-thread start for that long first, to open the window in which
    a thread is registered with its pool but not yet running.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, prefix: str, delay: float = 0.0,
                 fail: Callable[[], bool] = lambda: False) -> None:
        self.starters: list[str] = []
        self._lock = threading.Lock()
        real = threading.Thread.start

        def start(thread: threading.Thread) -> None:
            if thread.name.startswith(prefix):
                with self._lock:
                    self.starters.append(threading.current_thread().name)
                if fail():
                    raise RuntimeError("can't start new thread")
                time.sleep(delay)
            real(thread)

        monkeypatch.setattr(threading.Thread, "start", start)


def test_a_burst_into_a_cold_pool_is_started_by_the_pool_not_the_submitter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Thread.start() waits for the new thread to run; a workflow calling go() 100 times must
    # not pay that 100 times. The submitter starts one thread; the pool's threads start the
    # rest, and the burst still gets a thread per slot, never more.
    starts = _StartLog(monkeypatch, "litedurable-cold")
    pool = WorkerPool(8, "litedurable-cold")
    release = threading.Event()
    running = threading.Semaphore(0)
    lock = threading.Lock()
    busy = [0, 0]  # running now, most at once

    def body() -> None:
        with lock:
            busy[0] += 1
            busy[1] = max(busy)
        running.release()
        release.wait(30)
        with lock:
            busy[0] -= 1

    try:
        for _ in range(20):
            pool.submit(body)
        for _ in range(8):
            assert running.acquire(timeout=10), "the burst did not start a thread per slot"
        me = threading.current_thread().name
        assert starts.starters.count(me) == 1, starts.starters
        assert len(starts.starters) == 8  # the bound: no spare beyond the pool's size
    finally:
        release.set()
        assert pool.shutdown(30) == []
    assert busy[1] == 8


def test_a_thread_taking_work_keeps_a_spare_ready_for_the_next_submit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    starts = _StartLog(monkeypatch, "litedurable-spare")
    pool = WorkerPool(4, "litedurable-spare")
    release = threading.Event()
    first, second = threading.Event(), threading.Event()
    try:
        pool.submit(lambda: (first.set(), release.wait(30)))
        assert first.wait(10)
        eventually(lambda: len(starts.starters) == 2, "the spare thread to start", timeout=HANG)
        pool.submit(lambda: (second.set(), release.wait(30)))  # taken by the spare
        assert second.wait(10)
        assert starts.starters[0] == threading.current_thread().name
        assert threading.current_thread().name not in starts.starters[1:]
    finally:
        release.set()
        assert pool.shutdown(30) == []


def test_shutdown_while_a_thread_is_being_started_joins_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A pool thread starting another one registers it first and starts it after: shutdown in
    # between must neither join a thread that has not started (a RuntimeError) nor leave it.
    starts = _StartLog(monkeypatch, "litedurable-slow", delay=0.2)
    pool = WorkerPool(4, "litedurable-slow")
    ran = threading.Event()
    pool.submit(ran.set)  # its thread starts a spare (slowly) before running it
    eventually(lambda: len(starts.starters) == 2, "the spare's start to begin", timeout=HANG)
    assert pool.shutdown(10) == []
    assert ran.is_set()  # work already taken is not dropped
    assert not [name for name in engine_thread_names() if name.startswith("litedurable-slow")]


def test_a_refused_thread_start_leaves_the_pool_able_to_start_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refuse = [True]
    _StartLog(monkeypatch, "litedurable-refused", fail=lambda: refuse[0])
    pool = WorkerPool(1, "litedurable-refused")
    ran = threading.Semaphore(0)
    try:
        with pytest.raises(RuntimeError, match="can't start new thread"):
            pool.submit(ran.release)  # queued, but no thread could be started for it
        refuse[0] = False
        pool.submit(ran.release)  # the refused thread no longer counts against the size
        for _ in range(2):
            assert ran.acquire(timeout=10), "the queued work never ran"
    finally:
        assert pool.shutdown(30) == []
