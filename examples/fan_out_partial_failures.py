"""Charge many orders in parallel; collect successes and failures instead of failing fast.

Shows per-future outcomes: ``Future.exception()`` returns the recorded error (or None), so a
workflow can finish with a partial result. Failures are journal rows like values: after a
crash they are replayed, not retried. The script runs the batch once without a crash for
reference, then again with a crash after the fourth committed charge, and compares.

    python examples/fan_out_partial_failures.py [journal.db]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable

import litedurable as ld
from litedurable.testing import crash_at

ORDERS = [f"order-{n}" for n in range(1, 9)]
DECLINED = {"order-3", "order-6"}
FRAUD = {"order-8"}


def make_app(path: str) -> tuple[ld.App, Callable[[list[str]], dict[str, list[str]]]]:
    app = ld.App(path)

    @app.step(name="charge")
    def charge(order: str) -> str:
        time.sleep(0.003 * (len(order) + int(order[-1]) % 4))
        if order in DECLINED:
            raise ValueError(f"{order}: card declined")
        if order in FRAUD:
            raise PermissionError(f"{order}: flagged for review")
        return f"{order}: charged"

    @app.workflow(name="charge_all")
    def charge_all(orders: list[str]) -> dict[str, list[str]]:
        futures = [ld.go(charge, order) for order in orders]
        report: dict[str, list[str]] = {"charged": [], "failed": []}
        for future in futures:
            error = future.exception()  # waits; the recorded error, or None
            if error is None:
                report["charged"].append(future.result())
            else:
                report["failed"].append(f"{type(error).__name__}: {error}")
        return report

    return app, charge_all


def main(path: str) -> None:
    app, charge_all = make_app(path)
    with app:
        reference = app.run(charge_all, ORDERS, workflow_id=f"reference-{uuid.uuid4().hex[:8]}")

    workflow_id = f"batch-{uuid.uuid4().hex[:8]}"
    app, charge_all = make_app(path)
    switch = crash_at(app, "after_commit", nth=4)
    with app:
        app.start(charge_all, ORDERS, workflow_id=workflow_id)
        if not switch.wait():
            sys.exit("the workflow never committed four charges")
    print(f"crashed after committing step {switch.info['step']} ({switch.info['name']})")

    app, charge_all = make_app(path)
    with app:
        report = app.handle(workflow_id).result(timeout=30)
    print("charged:", ", ".join(line.split(":")[0] for line in report["charged"]))
    for line in report["failed"]:
        print("failed: ", line)
    same = report == reference
    print(f"same outcome as the crash-free run: {same}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(os.path.join(tmp, "fan_out_partial_failures.db"))
