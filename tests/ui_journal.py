"""A journal made by real workflows, for the timeline page's tests (and its screenshot).

``make_journal(path)`` runs, with two Apps one after the other (two owners):

* ``order-1`` (checkout): a race of two ``go`` steps and a one-hour ``after`` timer (the fast
  branch wins; the slow one finishes after the select), a step that fails twice and succeeds on
  its third attempt, a child workflow and its result, a step that fails (caught), then it waits
  for a message while the first App closes; the second App recovers it (replaying what the
  first recorded), sends the message, and it ships and sleeps briefly;
* ``refund-1``: a step that raises (the workflow fails, with its traceback);
* ``nap-1``: a step then a one-hour sleep (pending, its wake-up in the future).
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from support import eventually

import litedurable as ld

WORKFLOW_IDS = ("order-1", "order-1-invoice", "refund-1", "nap-1")


def _define(app: ld.App, released: threading.Event, tries: list[int]) -> dict[str, object]:
    @app.step("reserve")
    def reserve(item: str) -> str:
        return f"reserved {item}"

    @app.step("quote")
    def quote(vendor: str) -> int:
        if vendor == "slow":
            released.wait(30)  # finishes only once the workflow went past the select
        return len(vendor)

    @app.step("charge", retries=ld.Retry(max_attempts=3, initial=0.01))
    def charge(amount: int) -> str:
        tries.append(amount)
        if len(tries) < 3:
            raise ConnectionError(f"payment gateway timeout (try {len(tries)})")
        released.set()
        return f"charged {amount}"

    @app.step("refund_card")
    def refund_card(amount: int) -> str:
        raise ValueError(f"card declined for refund of {amount}")

    @app.workflow(name="invoice")
    def invoice(amount: int) -> str:
        return reserve(f"invoice {amount}")

    @app.workflow(name="checkout")
    def checkout(amount: int) -> str:
        reserve("book")
        fast, slow = ld.go(quote, "fast"), ld.go(quote, "slow")
        ld.select([fast, slow, ld.after(3600)])
        charge(amount)
        child = app.start(invoice, amount, workflow_id="order-1-invoice")
        text = child.result()
        slow.result()
        with contextlib.suppress(ValueError):  # a failed step the workflow handles
            refund_card(1)
        who = ld.recv("approve")
        reserve(f"shipping, approved by {who}")
        ld.sleep(0.01)
        return text

    @app.workflow(name="refund")
    def refund(amount: int) -> str:
        reserve("refund")
        return refund_card(amount)

    @app.workflow(name="nap")
    def nap() -> None:
        reserve("pillow")
        ld.sleep(3600)

    return {"checkout": checkout, "refund": refund, "nap": nap}


def make_journal(path: Path) -> Path:
    released, tries = threading.Event(), []
    app = ld.App(path)
    wf = _define(app, released, tries)
    with app:
        app.start(wf["checkout"], 1999, workflow_id="order-1")
        with contextlib.suppress(ValueError):
            app.run(wf["refund"], 5, workflow_id="refund-1")
        app.start(wf["nap"], workflow_id="nap-1")
        for workflow_id, kind in (("nap-1", "sleep"), ("order-1", "message")):
            eventually(lambda w=workflow_id, k=kind: any(s.kind == k for s in app.steps(w)),
                       f"{workflow_id} to reach its {kind}")
    second = ld.App(path)
    _define(second, threading.Event(), [])
    with second:
        second.send("order-1", "ada", topic="approve")
        second.handle("order-1").result(timeout=30)
    return path
