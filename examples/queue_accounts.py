"""Per-account ordering: each account's events one at a time, in order; accounts in parallel.

Shows a partitioned queue: ``app.queue("events", concurrency=1, partitioned=True)`` applies
its concurrency per ``partition_key``, so with the account as the key, an account's next event
starts only after its previous one ended, while the other accounts' events run meanwhile.
The App is closed halfway through and a fresh App finishes the work: the order holds across
the restart too (an event that was running is resumed before its account's next one starts).

    python examples/queue_accounts.py [journal.db]
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable

import litedurable as ld

ACCOUNTS = ["alice", "bob", "carol"]
EVENTS = 6  # per account
PROCESSED: dict[str, list[int]] = defaultdict(list)  # account -> event numbers, as processed
RUNS: Counter[tuple[str, int]] = Counter()
busy: Counter[str] = Counter()  # account -> its events being processed right now
overlaps = in_flight = peak = 0
lock = threading.Lock()


def make_app(path: str) -> tuple[ld.App, ld.Queue, Callable[[str, int], str]]:
    app = ld.App(path)
    events = app.queue("events", concurrency=1, partitioned=True)

    @app.step(name="apply")
    def apply(account: str, seq: int) -> str:
        global overlaps, in_flight, peak
        with lock:
            overlaps += busy[account]  # another event of this account still running?
            busy[account] += 1
            in_flight += 1
            peak = max(peak, in_flight)
            PROCESSED[account].append(seq)
            RUNS[account, seq] += 1
        time.sleep(0.01)  # post the ledger entry
        with lock:
            busy[account] -= 1
            in_flight -= 1
        return f"{account}#{seq} applied"

    @app.workflow(name="account_event")
    def account_event(account: str, seq: int) -> str:
        return apply(account, seq)

    return app, events, account_event


def main(path: str) -> None:
    app, events, account_event = make_app(path)
    with app:  # interleaved, as events arrive: alice#0, bob#0, carol#0, alice#1, ...
        for seq in range(EVENTS):
            for account in ACCOUNTS:
                events.enqueue(account_event, account, seq, partition_key=account,
                               workflow_id=f"{account}-{seq}")
        while sum(RUNS.values()) < len(ACCOUNTS) * EVENTS // 2:
            time.sleep(0.002)
    print(f"closed after {sum(RUNS.values())} events; a fresh App finishes the rest")
    app, _, _ = make_app(path)
    with app:
        for seq in range(EVENTS):
            for account in ACCOUNTS:
                app.handle(f"{account}-{seq}").result(timeout=60)
    for account in ACCOUNTS:
        print(f"{account}: {' '.join(str(seq) for seq in PROCESSED[account])}")
    in_order = all(PROCESSED[a] == list(range(EVENTS)) for a in ACCOUNTS)
    once = set(RUNS.values()) == {1} and len(RUNS) == len(ACCOUNTS) * EVENTS
    print(f"events of one account at the same time: {overlaps}; "
          f"accounts at the same time: up to {peak}")
    ok = in_order and once and overlaps == 0
    print(f"each account's events once, strictly in order, across the restart: {ok}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(os.path.join(tmp, "queue_accounts.db"))
