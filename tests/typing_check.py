"""Documented calls that must pass ``mypy --strict`` with no ``type: ignore`` (issue 12 item 18).

Checked, not run: ``tests/test_trust_api.py`` runs mypy on this file. Every ``reveal``-free
assignment below pins a static type the documentation promises.
"""

from __future__ import annotations

from datetime import timedelta

import litedurable as ld

app = ld.App("typing.db")


@app.step()
def fetch(url: str) -> int:
    return len(url)


@app.workflow()
def child(n: int) -> int:
    return n * 2


@app.workflow(timeout=30)
def parent(n: int) -> int:
    kid = app.start(child, n, workflow_id=f"{ld.workflow_id()}-kid")
    detached = app.start(child, n, detached=True)
    winner = ld.select([kid, ld.after(5)])  # a child handle races timers and steps
    if winner is kid:
        return kid.result()
    total: list[int] = ld.wait_all([kid, detached, ld.go(fetch, "x")])
    for done in ld.as_completed([detached, ld.go(fetch, "y")]):
        total.append(done.result())
    if ld.is_replaying():
        return 0
    ld.logger.info("parent %s done", ld.workflow_id())
    return sum(total)


def outside() -> None:
    with app:
        plain: ld.Handle[int] = app.start(parent, 1)
        by_id: ld.Handle[int] = app.start(parent, 2, workflow_id="p-2")
        timed: ld.Handle[int] = app.start(parent, 3, workflow_id="p-3", timeout=timedelta(1))
        only_timeout: ld.Handle[int] = app.start(parent, 4, timeout=5.0)
        value: int = app.run(parent, 5, workflow_id="p-5")
        value += app.run(parent, 6, timeout=60)
        value += plain.result() + by_id.result(timeout=1) + timed.result() + only_timeout.result()
        resumed = app.resume("p-2", app_version="v2")
        forked = app.fork("p-2", 1, new_id="p-2b", app_version="v2")
        print(value, resumed.status(), forked.workflow_id)
