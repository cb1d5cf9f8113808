"""A cron job with seconds, run by two Apps on one file: every firing runs exactly once.

Shows ``app.schedule(name, workflow, cron)``: the cron has six fields (seconds first), the
workflow receives its fire time, and each firing's id is ``"<name>@<fire time>"``. Two Apps
(standing in for two processes) both run the schedule; the id makes each firing start once.
The schedule is stored in the journal: a third App that only registers the workflow keeps it
going.

    python examples/scheduled_job.py [journal.db]
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime

import litedurable as ld

RUNS: Counter[str] = Counter()  # firing id -> how many times its step ran
LOCK = threading.Lock()


def make_app(path: str) -> tuple[ld.App, Callable[[datetime], str]]:
    app = ld.App(path)

    @app.step(name="send_digest")
    def send_digest(fire_at: datetime) -> str:
        with LOCK:
            RUNS[ld.workflow_id()] += 1
        return f"digest for {fire_at:%H:%M:%S}"

    @app.workflow(name="digest")
    def digest(fire_at: datetime) -> str:
        return send_digest(fire_at)

    return app, digest


def main(path: str) -> None:
    first, digest_a = make_app(path)
    second, digest_b = make_app(path)
    first.schedule("digest", digest_a, "* * * * * *")  # every second
    second.schedule("digest", digest_b, "* * * * * *")
    with first, second:
        time.sleep(2.5)
    third, _ = make_app(path)  # declares no schedule: the journal has it
    with third:
        time.sleep(1.2)
        [schedule] = third.list_schedules()
        firings = sorted(w.workflow_id for w in third.list_workflows(name="digest"))
        for wid in firings:
            third.handle(wid).result(timeout=30)
    print(f"schedule {schedule.name!r} ({schedule.cron}), last fire {schedule.last_fire}")
    print("firings:", ", ".join(f.split("T")[1] for f in firings))
    once = len(firings) >= 3 and all(RUNS[f] == 1 for f in firings)
    print(f"each firing ran exactly once: {once}")
    sys.exit(0 if once else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(os.path.join(tmp, "scheduled_job.db"))
