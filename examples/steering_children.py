"""A parent steers its child workflows with messages: work, pause, resume, stop.

Shows ``ld.send`` to a child's id and ``ld.recv(topic)`` in the child. The parent pauses one
child, lets the other finish, then resumes the first: a paused child waits on the ``resume``
topic only, so the work sent to it meanwhile stays in its mailbox until it resumes. The App
crashes after a child's first batch; in a new App nothing is sent or received twice (each send
and receive is in the journal) and no committed batch runs again.

    python examples/steering_children.py [journal.db]
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Callable

import litedurable as ld
from litedurable.testing import crash_at

RAN: Counter[str] = Counter()  # how often each batch step's body ran, by "<workflow id>:<step>"
LOCK = threading.Lock()


def make_app(path: str) -> tuple[ld.App, Callable[[], dict[str, list[str]]]]:
    app = ld.App(path)

    @app.step(name="process")
    def process(items: int) -> int:
        with LOCK:
            RAN[ld.idempotency_key()] += 1
        return items

    @app.workflow(name="worker")
    def worker() -> list[str]:
        log: list[str] = []
        while (command := ld.recv("commands")) != "stop":
            if command == "pause":  # until resumed, commands wait in the mailbox
                log += ["paused", f"resumed by {ld.recv('resume')}"]
            else:
                log.append(f"did {process(int(command.split()[1]))} items")
        return log

    @app.workflow(name="supervisor")
    def supervisor() -> dict[str, list[str]]:
        a, b = app.start(worker), app.start(worker)
        for child, command in [(a, "work 3"), (b, "work 4"), (a, "pause"), (a, "work 5")]:
            ld.send(child.workflow_id, command, topic="commands")
        ld.send(b.workflow_id, "stop", topic="commands")
        b_log = b.result()  # a stays paused meanwhile, "work 5" unread in its mailbox
        ld.send(a.workflow_id, "the supervisor", topic="resume")
        ld.send(a.workflow_id, "stop", topic="commands")
        return {"a": a.result(), "b": b_log}

    return app, supervisor


def main(path: str) -> None:
    workflow_id = f"supervisor-{uuid.uuid4().hex[:8]}"
    app, supervisor = make_app(path)
    committed: set[str] = set()  # batches durable before the crash

    def observe(point: str, info: object) -> None:
        if point == "after_commit" and isinstance(info, dict):
            committed.add(f"{info['workflow_id']}:{info['step']}")

    switch = crash_at(app, "after_commit", observer=observe)  # the first batch done
    with app:
        app.start(supervisor, workflow_id=workflow_id)
        if not switch.wait(30):
            sys.exit("no batch was ever done")
    print(f"crashed after the first batch committed ({switch.info['workflow_id']})")

    app, _ = make_app(path)
    with app:
        logs = app.handle(workflow_id).result(timeout=30)
    for child, log in logs.items():
        print(f"child {child}: {log}")
    again = [k for k in committed if RAN[k] != 1]
    print(f"committed batches run again: {again or 'none'}")
    ok = not again and logs == {
        "a": ["did 3 items", "paused", "resumed by the supervisor", "did 5 items"],
        "b": ["did 4 items"],
    }
    print(f"every command taken once, in order, across the crash: {ok}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(os.path.join(tmp, "steering_children.db"))
