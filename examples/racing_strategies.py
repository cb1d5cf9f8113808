"""Run two algorithms for the same answer; keep the first to finish, cancel the other.

Shows ``select`` over competing strategies plus cooperative cancellation: ``Future.cancel()``
makes ``ld.cancelled()`` true inside the loser, which stops early, and its recorded outcome
is ``StepCancelledError``. The script crashes right after the winner is recorded; in the next
process the costs are swapped so the other strategy would be faster, but the resumed workflow
keeps the recorded winner (and cancels the re-started loser again).

    python examples/racing_strategies.py [journal.db]
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


def make_app(path: str, cost: dict[str, float]) -> tuple[ld.App, Callable[[float], str]]:
    app = ld.App(path)

    def expensive_iteration(name: str) -> None:
        if ld.cancelled():  # raising after a cancel records StepCancelledError
            raise RuntimeError(f"{name} stopped: another strategy won")
        time.sleep(cost[name])

    @app.step(name="newton")
    def newton(x: float) -> float:
        guess = x
        while abs(guess * guess - x) > 1e-9:
            expensive_iteration("newton")
            guess = (guess + x / guess) / 2
        return guess

    @app.step(name="bisection")
    def bisection(x: float) -> float:
        low, high = 0.0, max(1.0, x)
        while high - low > 1e-9:
            expensive_iteration("bisection")
            middle = (low + high) / 2
            low, high = (middle, high) if middle * middle < x else (low, middle)
        return (low + high) / 2

    @app.workflow(name="square_root")
    def square_root(x: float) -> str:
        racers = {"newton": ld.go(newton, x), "bisection": ld.go(bisection, x)}
        first = ld.select(list(racers.values()))
        winner = next(name for name, f in racers.items() if f is first)
        loser = next(f for f in racers.values() if f is not first)
        loser.cancel()
        return f"{winner} won: {first.result():.6f} (loser: {type(loser.exception()).__name__})"

    return app, square_root


def main(path: str) -> None:
    workflow_id = f"sqrt-{uuid.uuid4().hex[:8]}"
    app, square_root = make_app(path, {"newton": 0.002, "bisection": 0.002})
    switch = crash_at(app, "after_decision")
    with app:
        app.start(square_root, 1764.0, workflow_id=workflow_id)
        if not switch.wait():
            sys.exit("the workflow never reached its decision")
    step, winner = switch.info["step"], switch.info["winner"]
    print(f"crashed right after the select at step {step} picked candidate {winner}")

    app, square_root = make_app(path, {"newton": 0.02, "bisection": 0.0005})  # costs swapped
    with app:
        print("result:", app.handle(workflow_id).result(timeout=30))
        decision = next(s for s in app.steps(workflow_id) if s.step == step)
    kept = decision.winner == winner
    print(f"winning strategy kept across the crash: {kept}")
    sys.exit(0 if kept else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(os.path.join(tmp, "racing_strategies.db"))
