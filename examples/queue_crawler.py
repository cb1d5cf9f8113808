"""A polite crawler: a queue that starts at most 10 fetches a second, 4 at a time.

Shows ``app.queue(name, concurrency=4, rate_limit=(10, 1.0))`` and ``q.enqueue``: 30 pages
are enqueued at once and the queue lets them out no faster than its limits allow, across
every process on the file (here one). Each page's workflow records when it started
(``ld.now()``, a journaled time), so the rate is read back from the journal afterwards. There
is no network: "fetching" sleeps 5 ms and returns a made-up size.

    python examples/queue_crawler.py [journal.db]
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable

import litedurable as ld

PAGES = [f"https://example.org/page/{n}" for n in range(30)]
RATE, PER = 10, 1.0
FETCHES: Counter[str] = Counter()  # url -> how many times its fetch step ran
lock = threading.Lock()


def make_app(path: str) -> tuple[ld.App, ld.Queue, Callable[[str], tuple[float, int]]]:
    app = ld.App(path)
    pages = app.queue("pages", concurrency=4, rate_limit=(RATE, PER))

    @app.step(name="fetch")
    def fetch(url: str) -> int:
        with lock:
            FETCHES[url] += 1
        time.sleep(0.005)  # the "download"
        return 1000 + 37 * int(url.rsplit("/", 1)[1])  # a made-up page size

    @app.workflow(name="crawl_page")
    def crawl_page(url: str) -> tuple[float, int]:
        started = ld.now().timestamp()  # recorded: a replay returns the same instant
        return started, fetch(url)

    return app, pages, crawl_page


def bursts(starts: list[float], gap: float) -> list[list[float]]:
    """The starts grouped into bursts: a start more than ``gap`` after the previous one opens
    a new burst. At 4 at a time and 5 ms a page, a full window's starts take a few ms; the
    rate limit then holds the next ones until the window's oldest leaves it."""
    groups: list[list[float]] = []
    for t in sorted(starts):
        if groups and t - groups[-1][-1] <= gap:
            groups[-1].append(t)
        else:
            groups.append([t])
    return groups


def main(path: str) -> None:
    app, pages, crawl_page = make_app(path)
    with app:
        enqueued_at = time.time()
        handles = [pages.enqueue(crawl_page, url, workflow_id=f"crawl:{url}") for url in PAGES]
        results = [h.result(timeout=60) for h in handles]
    starts = sorted(started for started, _ in results)
    size = sum(size for _, size in results)
    once = sorted(FETCHES) == sorted(PAGES) and set(FETCHES.values()) == {1}
    # What the limit guarantees, checked against the recorded starts: the k-th start comes at
    # least k // RATE windows after the enqueue (each start is observed a moment after the
    # dequeue the limit counts, so a rolling window of *starts* may catch one extra).
    paced = all(t >= enqueued_at + (k // RATE) * PER for k, t in enumerate(starts))
    print(f"pages fetched: {len(results)} ({size} bytes in all), each once: {once}")
    print(f"first to last start: {starts[-1] - starts[0]:.2f} s "
          f"(at {RATE} a second, 30 pages need at least {(len(PAGES) - 1) // RATE * PER:.1f} s)")
    groups = bursts(starts, PER / 2)
    apart = [b[0] - a[0] for a, b in itertools.pairwise(groups)]
    print(f"starts per second: {', '.join(str(len(g)) for g in groups)} (bursts "
          f"{', '.join(f'{s:.2f}' for s in apart)} s apart)")
    most = max(len(g) for g in groups)
    print(f"observed max starts per second: {most} (limit {RATE})")
    ok = once and paced and most <= RATE
    print(f"every page fetched once, no faster than the rate limit: {ok}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(os.path.join(tmp, "queue_crawler.db"))
