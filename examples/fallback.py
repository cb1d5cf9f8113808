"""Ask the primary; if it fails or is slow, fall back to the backup, and stick to that choice.

Shows ``ld.after`` as a durable timer in a ``select``, and a recorded failure: the primary's
``ConnectionError`` is a journal row, replayed (not retried) after a crash. The script crashes
right after the select's decision; in the next process the primary is healthy again, yet the
resumed workflow takes the same fallback path and asks the backup.

    python examples/fallback.py [journal.db]
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Callable

import litedurable as ld
from litedurable.testing import crash_at


def make_app(path: str, primary_up: bool) -> tuple[ld.App, Callable[[str], str]]:
    app = ld.App(path)

    @app.step(name="from_primary")
    def from_primary(day: str) -> str:
        if not primary_up:
            raise ConnectionError("primary.example: connection refused")
        return f"report {day} from primary"

    @app.step(name="from_backup")
    def from_backup(day: str) -> str:
        return f"report {day} from backup"

    @app.workflow(name="report")
    def report(day: str) -> str:
        primary = ld.go(from_primary, day)
        timer = ld.after(0.05)  # give the primary 50 ms
        first = ld.select([primary, timer])
        if first is primary and primary.exception() is None:
            return primary.result()
        why = "timed out" if first is timer else f"failed: {primary.exception()}"
        return f"{ld.go(from_backup, day).result()} (primary {why})"

    return app, report


def main(path: str) -> None:
    workflow_id = f"report-{uuid.uuid4().hex[:8]}"
    app, report = make_app(path, primary_up=False)
    switch = crash_at(app, "after_decision")
    with app:
        app.start(report, "2025-01-31", workflow_id=workflow_id)
        if not switch.wait():
            sys.exit("the workflow never reached its decision")
    step, winner = switch.info["step"], switch.info["winner"]
    print(f"crashed right after the select at step {step} picked candidate {winner}")

    app, report = make_app(path, primary_up=True)  # the primary is back
    with app:
        result = app.handle(workflow_id).result(timeout=30)
        decision = next(s for s in app.steps(workflow_id) if s.step == step)
    print("result:", result)
    kept = decision.winner == winner and "from backup" in result
    print(f"fallback decision kept across the crash: {kept}")
    sys.exit(0 if kept else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(os.path.join(tmp, "fallback.db"))
