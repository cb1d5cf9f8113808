"""A workflow with a deadline: the deadline is stored, so it holds across a restart.

Shows ``@app.workflow(timeout=...)``: the deadline is absolute and written with the workflow.
The process stops while the workflow waits for an approval; by the time a new process starts
the deadline has passed, so the workflow is cancelled at once with ``WorkflowTimedOutError``
(its step after the wait never runs). ``app.resume`` then gives it another go without a
deadline, and this time the approval is there.

    python examples/workflow_timeout.py [journal.db]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import litedurable as ld

SHIPPED: list[str] = []


def make_app(path: str, approval: Path) -> tuple[ld.App, Callable[[str], str]]:
    app = ld.App(path)

    @app.step(name="approved")
    def approved(order: str) -> bool:
        return approval.exists()

    @app.step(name="ship")
    def ship(order: str) -> str:
        SHIPPED.append(order)
        return f"shipped {order}"

    @app.workflow(name="fulfil", timeout=0.5)
    def fulfil(order: str) -> str:
        while not approved(order):  # each check is a step, each pause a durable sleep
            ld.sleep(0.05)
        return ship(order)

    return app, fulfil


def main(path: str) -> None:
    approval = Path(path + ".approved")
    workflow_id = f"order-{uuid.uuid4().hex[:8]}"
    app, fulfil = make_app(path, approval)
    with app:
        app.start(fulfil, "order-7", workflow_id=workflow_id)
        time.sleep(0.1)
    print("the process stopped while the workflow waited for its approval")
    time.sleep(0.6)  # the 0.5 s deadline passes while nothing runs

    app, _ = make_app(path, approval)
    with app:
        handle = app.handle(workflow_id)
        try:
            handle.result(timeout=30)
            timed_out = False
        except ld.WorkflowTimedOutError as exc:
            timed_out = True
            print(f"on restart: {type(exc).__name__}: {exc}")
        print(f"status: {handle.status()}; shipped: {SHIPPED or 'nothing'}")
        approval.touch()
        print("resumed without a deadline:", app.resume(workflow_id).result(timeout=30))
    ok = timed_out and SHIPPED == ["order-7"]
    print(f"deadline honoured across the restart, then resumed: {ok}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(os.path.join(tmp, "workflow_timeout.db"))
