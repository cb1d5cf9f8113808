"""Wait 48 hours for an approval, unless a cancel message comes first; the wait is durable.

Shows ``ld.message(topic)`` futures raced with a timer, ``ld.after(48 h)``, in ``ld.select``:
whichever settles first is the recorded decision. Three requests wait; after a simulated day
the process stops (a two-day wait outlives any one process). A new process approves one,
cancels another, and lets the second day pass for the third, which expires: its deadline was
recorded when it started waiting. The clock is a ``FakeClock``, so the two days take a second.

    python examples/approval.py [journal.db]
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Callable

import litedurable as ld
from litedurable.testing import FakeClock

DAY = 24 * 3600


def make_app(path: str, clock: FakeClock) -> tuple[ld.App, Callable[[str], str]]:
    app = ld.App(path, clock=clock)

    @app.workflow(name="expense")
    def expense(request: str) -> str:
        approve, cancel = ld.message("approve"), ld.message("cancel")
        expiry = ld.after(2 * DAY)
        ld.set_event("state", "waiting for a decision")
        winner = ld.select([approve, cancel, expiry])
        if winner is approve:
            return f"{request}: approved by {approve.result()}"
        if winner is cancel:
            return f"{request}: cancelled ({cancel.result()})"
        return f"{request}: expired (nobody answered within 48 hours)"

    return app, expense


def main(path: str) -> None:
    run = uuid.uuid4().hex[:8]
    ids = {request: f"{request}-{run}" for request in ("laptop", "trip", "chairs")}
    clock = FakeClock()
    app, expense = make_app(path, clock)
    with app:
        for request, workflow_id in ids.items():
            app.start(expense, request, workflow_id=workflow_id)
        for workflow_id in ids.values():
            app.get_event(workflow_id, "state", timeout=30)
        clock.advance(DAY)
    print("a day later the process stopped; three requests are waiting")

    clock = FakeClock(clock.now())  # a new process; the journal's time goes on
    app, _ = make_app(path, clock)
    with app:
        app.send(ids["laptop"], "ada", topic="approve")
        app.send(ids["trip"], "plans changed", topic="cancel")
        results = [app.handle(ids[r]).result(timeout=30) for r in ("laptop", "trip")]
        clock.advance(DAY)  # 48 hours since the requests started waiting
        results.append(app.handle(ids["chairs"]).result(timeout=30))
    for result in results:
        print(result)
    ok = [r.split()[1] for r in results] == ["approved", "cancelled", "expired"]
    print(f"each request decided by what came first, across the restart: {ok}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(os.path.join(tmp, "approval.db"))
