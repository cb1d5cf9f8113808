"""Process many items with at most N in flight, refilling a slot as soon as one frees up.

Shows ``select`` as a durable work queue: start N steps, wait for the first to finish, start
the next item in its place. Every "which one finished" is a recorded decision, so a replay
refills in the same order and starts the same steps under the same step numbers. The script
crashes right after the fourth decision and resumes in a "new process".

    python examples/bounded_concurrency.py [journal.db]
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping

import litedurable as ld
from litedurable.testing import crash_at

LIMIT = 3
ITEMS = [f"file-{n:02d}" for n in range(10)]
in_flight = peak = 0
lock = threading.Lock()


def make_app(path: str) -> tuple[ld.App, Callable[[list[str]], list[str]]]:
    app = ld.App(path)

    @app.step(name="upload")
    def upload(item: str) -> str:
        global in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.004 * (1 + 7 * int(item[-2:]) % 5))  # 4 to 20 ms
        with lock:
            in_flight -= 1
        return f"{item} uploaded"

    @app.workflow(name="upload_all")
    def upload_all(items: list[str]) -> list[str]:
        waiting, done = list(items), []
        running: list[ld.Future[str]] = []
        while waiting or running:
            while waiting and len(running) < LIMIT:  # fill the free slots
                running.append(ld.go(upload, waiting.pop(0)))
            finished = ld.select(running)
            running.remove(finished)
            done.append(finished.result())
        return done

    return app, upload_all


def main(path: str) -> None:
    workflow_id = f"uploads-{uuid.uuid4().hex[:8]}"
    before: list[tuple[object, object]] = []

    def watch(point: str, info: Mapping[str, object]) -> None:
        if point == "after_decision":
            before.append((info["step"], info["winner"]))

    app, upload_all = make_app(path)
    switch = crash_at(app, "after_decision", nth=4, observer=watch)
    with app:
        app.start(upload_all, ITEMS, workflow_id=workflow_id)
        if not switch.wait():
            sys.exit("the workflow never reached its fourth decision")
    print(f"crashed after {len(before)} decisions")

    app, upload_all = make_app(path)
    with app:
        print("finished in order:", ", ".join(app.handle(workflow_id).result(timeout=30)))
        after = [(s.step, s.winner) for s in app.steps(workflow_id) if s.kind == "select"]
    kept = after[: len(before)] == before
    print(f"at most {LIMIT} in flight: {peak <= LIMIT} (peak {peak})")
    print(f"decisions kept across the crash: {kept}")
    sys.exit(0 if kept and peak <= LIMIT else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(os.path.join(tmp, "bounded_concurrency.db"))
