"""A queue consumer for ``test_queue_processes.py``: the same App in the test and its children.

``build`` declares queue ``jobs`` and workflow ``job`` on a journal: the workflow's one step
appends ``start <workflow id> <pid> <time>`` to a ledger, sleeps, appends ``end ...`` and
returns. Each line is one ``os.write`` on a file opened with ``O_APPEND``, so lines of several
processes never interleave. Run as a script, it consumes the queue until killed (SIGKILL, the
test's nemesis) or told to stop (SIGTERM: ``serve`` closes the App gracefully), after a
``ready - <pid> <time>`` line once launched::

    python queue_worker.py JOURNAL LEDGER CONFIG_JSON

CONFIG_JSON holds ``build``'s keywords (``defects``: the fault seam's defects to inject, e.g.
``["racy_dequeue"]`` for the negative control).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence

import litedurable as ld

QUEUE = "jobs"


def append(ledger: str, line: str) -> None:
    """Append one line to the ledger in one write (O_APPEND: no interleaving)."""
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def build(path: str, ledger: str, *, concurrency: int | None = None,
          worker_concurrency: int | None = None, rate_limit: Sequence[float] | None = None,
          pause: float = 0.02, lease: float = 1.0,
          defects: Sequence[str] = ()) -> tuple[ld.App, ld.Queue, Callable[[str, int], int]]:
    """The App consuming queue ``jobs`` on ``path``, the queue, and workflow ``job``."""
    app = ld.App(path, lease=lease)
    app.faults.inject(*defects)
    rate = None if rate_limit is None else (int(rate_limit[0]), float(rate_limit[1]))
    queue = app.queue(QUEUE, concurrency=concurrency, worker_concurrency=worker_concurrency,
                      rate_limit=rate)

    @app.step(name="work")
    def work(name: str, n: int) -> int:
        append(ledger, f"start {name} {os.getpid()} {time.time()!r}")
        time.sleep(pause)
        append(ledger, f"end {name} {os.getpid()} {time.time()!r}")
        return n * 2

    @app.workflow(name="job")
    def job(name: str, n: int) -> int:
        return work(name, n) + 1

    return app, queue, job


def main(argv: list[str]) -> None:
    path, ledger, config = argv
    app, _, _ = build(path, ledger, **json.loads(config))
    app.launch()
    append(ledger, f"ready - {os.getpid()} {time.time()!r}")
    app.serve()


if __name__ == "__main__":
    main(sys.argv[1:])
