"""Give a slow service 20 ms, then fall back to a cached answer; the timeout is durable.

Shows ``ld.select(futures, timeout=...)``: the deadline is recorded when the select starts and
the expiry is recorded as the decision (winner ``-1``), so ``WaitTimeoutError`` is raised again
on replay. The script crashes right after the timeout is recorded; in the next process the
service answers instantly, and still the workflow returns the cached answer it chose before.

    python examples/race_timeout.py [journal.db]
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


def make_app(path: str, service_delay: float) -> tuple[ld.App, Callable[[str], str]]:
    app = ld.App(path)

    @app.step(name="fetch_profile")
    def fetch_profile(user: str) -> str:
        time.sleep(service_delay)
        return f"fresh profile of {user}"

    @app.step(name="cached_profile")
    def cached_profile(user: str) -> str:
        return f"cached profile of {user}"

    @app.workflow(name="profile")
    def profile(user: str) -> str:
        live = ld.go(fetch_profile, user)
        try:
            ld.select([live], timeout=0.02)
        except ld.WaitTimeoutError:
            return cached_profile(user) + " (the service took longer than 20 ms)"
        return live.result()

    return app, profile


def main(path: str) -> None:
    workflow_id = f"profile-{uuid.uuid4().hex[:8]}"
    app, profile = make_app(path, service_delay=0.05)
    switch = crash_at(app, "after_decision")
    with app:
        app.start(profile, "ada", workflow_id=workflow_id)
        if not switch.wait():
            sys.exit("the workflow never reached its decision")
    step, winner = switch.info["step"], switch.info["winner"]
    print(f"crashed right after the select at step {step} decided {winner} (-1 = timed out)")

    app, profile = make_app(path, service_delay=0.0)  # the service is instant now
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
            main(os.path.join(tmp, "race_timeout.db"))
