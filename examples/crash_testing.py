"""Crash-test your own workflow: ``litedurable.testing`` finds a bug a crash-free test misses.

``ship`` keeps a set of the orders it has seen in process memory and branches on it outside a
step. It passes every ordinary test; but after a crash the recovered run finds the order
already "seen", skips the notification and takes another path than the journal holds.
``crash_test`` replays the workflow with a crash at each point Hypothesis picks
(``crash_schedules()``) and reports the first divergence in plain words; the fixed workflow,
which keeps no state outside its steps, passes the full sweep of crash points.

    python examples/crash_testing.py [journal.db]   # the fixed workflow's run lands there
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings

import litedurable as ld
from litedurable.testing import CrashTestError, FakeClock, crash_schedules, crash_test

SEEN_ORDERS: set[str] = set()  # the bug: workflow state that lives outside the journal


def make_app(path: str, *, buggy: bool) -> tuple[ld.App, Callable[..., Any]]:
    app = ld.App(path, clock=FakeClock())

    @app.step(name="reserve")
    def reserve(order: str) -> str:
        return f"reserved {order}"

    @app.step(name="notify")
    def notify(order: str) -> str:
        return f"told the customer about {order}"

    @app.step(name="charge")
    def charge(order: str) -> str:
        return f"charged {order}"

    @app.workflow(name="ship")
    def ship(order: str) -> list[str]:
        done = [reserve(order)]
        first_time = order not in SEEN_ORDERS if buggy else True
        SEEN_ORDERS.add(order)
        if first_time:
            done.append(notify(order))
        return [*done, charge(order)]

    return app, ship


def main(path: str) -> None:
    found: list[str] = []

    @settings(max_examples=10, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(crash_schedules(max_occurrence=3, max_crashes=1))
    def buggy_survives_crashes(crashes: list[tuple[str, int]]) -> None:
        SEEN_ORDERS.clear()
        crash_test(lambda path: make_app(path, buggy=True), ("order-7",), crashes=crashes)

    try:
        buggy_survives_crashes()
    except CrashTestError as exc:
        found.append(str(exc))
        print("the buggy workflow fails its crash test:\n ", str(exc).replace("\n", "\n  "))
    SEEN_ORDERS.clear()
    result = crash_test(lambda path: make_app(path, buggy=False), ("order-7",))
    print(f"the fixed workflow survived {len(result.crashes)} crashes with result "
          f"{result.outcome[1]}")
    app, ship = make_app(path, buggy=False)  # and an ordinary run, to inspect with the CLI
    with app:
        app.run(ship, "order-8", workflow_id="order-8")
    print(f"see its journal: litedurable --db {path} steps order-8")
    print(f"bug found by the crash test, fix passes: {bool(found)}")
    sys.exit(0 if found else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(os.path.join(tmp, "crash_testing.db"))
