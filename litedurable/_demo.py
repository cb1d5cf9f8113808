"""The crash-and-resume demo behind ``litedurable demo``.

A five-step workflow runs in a child process; the parent SIGKILLs the child after step 2 is
recorded, starts the workflow again in-process on the same journal, and prints, step by step,
which steps were replayed from the journal and which ran. Every step body appends a line to a
side-effect ledger, so the output proves no finished step ran twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime

from ._app import App
from ._backends import describe_location, is_server_url, open_storage
from ._concurrency import now

__all__ = ["main"]

STEPS = ("reserve stock", "charge card", "print label", "book courier", "email receipt")
KILL_AFTER = 2  # the child is killed once this many steps are recorded


def build(path: str, ledger: str, pace: float) -> tuple[App, Callable[[str], list[str]]]:
    """The demo App and its workflow, writing one ledger line per step body execution."""
    app = App(path)

    @app.step(name="demo-step")
    def do(index: int, title: str) -> str:
        with open(ledger, "a") as f:
            f.write(f"{os.getpid()} {index}\n")
        time.sleep(pace)
        return f"{title}: done"

    @app.workflow(name="litedurable-demo")
    def order(order_id: str) -> list[str]:
        started: datetime = now()
        results = [do(i, title) for i, title in enumerate(STEPS)]
        return [f"{order_id} started {started:%H:%M:%S}", *results]

    return app, order


def _child(path: str, ledger: str, workflow_id: str) -> None:
    app, order = build(path, ledger, pace=0.4)
    with app:
        app.run(order, workflow_id, workflow_id=workflow_id)


def _wait_for_steps(app_path: str, workflow_id: str, count: int, child: subprocess.Popen[bytes],
                    limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    with open_storage(app_path, readonly=True) as journal:
        while time.monotonic() < deadline and child.poll() is None:
            steps = journal.load_steps(workflow_id)
            if sum(1 for s in steps if s.kind == "step") >= count:
                return
            time.sleep(0.02)


def main(path: str = "litedurable.db") -> int:
    """Run the demo on ``path`` (default: the embedded ``litedurable.db`` in this directory)."""
    workflow_id = f"order-{int(time.time())}"
    if is_server_url(path):  # no directory to put the ledger beside: a temporary file
        fd, ledger = tempfile.mkstemp(prefix="litedurable-demo-", suffix=".ledger")
        os.close(fd)
    else:
        ledger = f"{path}.demo-ledger"
        open(ledger, "w").close()
    print(f"litedurable demo: workflow {workflow_id!r} in {describe_location(path)}")
    open_storage(path).close()  # create the file first, so this process can watch it read-only
    print(f"1. starting it in a child process; it will be killed after {KILL_AFTER} steps")
    child = subprocess.Popen(
        [sys.executable, "-m", "litedurable._demo", "child", path, ledger, workflow_id]
    )
    try:
        _wait_for_steps(path, workflow_id, KILL_AFTER, child)
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
        child.wait()
    print(f"2. child process {child.pid} killed with SIGKILL (exit code {child.returncode})")
    print("3. launching again in this process: the App recovers the pending workflow")
    app, _ = build(path, ledger, pace=0.05)
    with app:
        result = app.handle(workflow_id).result(timeout=60)
        steps = app.steps(workflow_id)
    with open(ledger) as f:
        runs = [line.split() for line in f]
    os.remove(ledger)
    print("4. journal, step by step:")
    for info in steps:
        if info.kind != "step":
            print(f"   step {info.step}: {info.kind:<5} recorded {info.output}")
            continue
        index = STEPS.index(str(info.output).split(":")[0])
        pids = [pid for pid, i in runs if int(i) == index]
        where = "the killed child" if pids and pids[0] == str(child.pid) else "this process"
        print(f"   step {info.step}: {info.output!r:<24} body ran {len(pids)}x, first in {where}")
    print(f"5. result: {result}")
    repeated = [i for i in range(len(STEPS)) if sum(1 for _, j in runs if int(j) == i) > 1]
    print("   finished steps were replayed from the journal, never run again")
    if repeated:
        print(f"   step(s) {repeated} ran again: the child was killed while running it, before "
              "its result was recorded (steps are at-least-once; ld.idempotency_key() helps)")
    return 0


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "child":
    _child(sys.argv[2], sys.argv[3], sys.argv[4])
