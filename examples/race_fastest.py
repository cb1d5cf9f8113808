"""Race two vendors for a price quote; the first answer wins, durably.

Shows ``ld.go`` + ``ld.select``: which vendor answered first is a journal row, written before
``select`` returns. The script crashes the process right after that decision is recorded,
reopens the journal as the next process would, and lets the workflow finish. This time the
other vendor is the fast one, yet the resumed workflow returns the recorded winner.

    python examples/race_fastest.py [journal.db]
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

PRICES = {"vendor-a": 101.25, "vendor-b": 99.50}


def make_app(path: str, latency: dict[str, float]) -> tuple[ld.App, Callable[[], str]]:
    app = ld.App(path)

    @app.step(name="quote")
    def quote(vendor: str) -> float:
        time.sleep(latency[vendor])  # a network call
        return PRICES[vendor]

    @app.workflow(name="first_quote")
    def first_quote() -> str:
        vendors = list(PRICES)
        futures = [ld.go(quote, vendor) for vendor in vendors]
        winner = ld.select(futures)
        return f"{vendors[futures.index(winner)]} answered first: {winner.result():.2f}"

    return app, first_quote


def main(path: str) -> None:
    workflow_id = f"quote-{uuid.uuid4().hex[:8]}"
    app, first_quote = make_app(path, {"vendor-a": 0.04, "vendor-b": 0.0})
    switch = crash_at(app, "after_decision")
    with app:
        app.start(first_quote, workflow_id=workflow_id)
        if not switch.wait():
            sys.exit("the workflow never reached its decision")
    step, winner = switch.info["step"], switch.info["winner"]
    print(f"crashed right after the decision at step {step}: candidate {winner} won")

    # The next process: same code, same file, but now vendor-a is the fast one.
    app, first_quote = make_app(path, {"vendor-a": 0.0, "vendor-b": 0.04})
    with app:
        print("result:", app.handle(workflow_id).result(timeout=30))
        decision = next(s for s in app.steps(workflow_id) if s.step == step)
    kept = decision.winner == winner
    print(f"decision kept across the crash: {kept}")
    sys.exit(0 if kept else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(os.path.join(tmp, "race_fastest.db"))
