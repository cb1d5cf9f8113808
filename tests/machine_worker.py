"""One "machine" of tests/test_machines.py: a worker process with its own App on a shared
PostgreSQL journal, posing as another host whose wall clock is off by ``skew`` seconds.

Usage: ``python machine_worker.py URL K SKEW LEDGER_DIR T0 PACE STOP_FILE LEASE [DEFECT]``.

It patches ``time.time`` (the machine's wall clock, skewed) and ``litedurable._lease.HOST``
(``machine-K``: no pid check applies to its owners, only leases decide) before the App
launches. It starts its share of the workflows (``job-K-I``, the I-th due at ``T0 + (4I + K) *
PACE`` of the real clock; a restarted worker starts those its killed predecessor had not, an
existing id being left alone), then runs them and whatever recovery gives it until
``STOP_FILE`` exists. ``DEFECT``: a fault-seam defect to inject (a negative control).

The ledger (``LEDGER_DIR/ledger-K-PID.jsonl``, opened O_APPEND, one JSON line per event, real
clock times): ``owner`` (this process's owner token), ``start``/``end`` of each step body
(workflow, step, a nonce unique to the execution, which the step returns: the journal's row
names the execution it recorded), and ``fenced`` (a run of this process was refused a write:
``OwnershipLostError``, logged by the runtime when it stops the run).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time

STEPS = 5  # steps per workflow
PER_WORKER = 10  # workflows each worker starts
STEP_SECONDS = 0.3  # each step body's length

_real_time = time.time


def main() -> None:
    url, k, skew, ledger_dir, t0, pace, stop_file, lease = sys.argv[1:9]
    defect = sys.argv[9] if len(sys.argv) > 9 else ""
    index, offset = int(k), float(skew)
    time.time = lambda: _real_time() + offset  # this machine's wall clock is off

    import litedurable as ld
    from litedurable import _lease

    _lease.HOST = f"machine-{index}"
    fd = os.open(os.path.join(ledger_dir, f"ledger-{index}-{os.getpid()}.jsonl"),
                 os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    counter = iter(range(1_000_000))
    counter_lock = threading.Lock()

    def log(event: str, **fields: object) -> None:
        line = json.dumps({"ev": event, "pid": os.getpid(), "t": _real_time(), **fields})
        os.write(fd, (line + "\n").encode())  # one write per line: O_APPEND keeps lines whole

    class Fenced(logging.Handler):
        """The runtime logs a run it stopped; one stopped by ``OwnershipLostError`` was
        fenced (its write refused because another owner took the workflow over)."""

        def emit(self, record: logging.LogRecord) -> None:
            args = record.args if isinstance(record.args, tuple) else ()
            if any(isinstance(a, ld.OwnershipLostError) for a in args):
                log("fenced", w=str(args[0]))

    logging.getLogger("litedurable").addHandler(Fenced())
    app = ld.App(url, lease=float(lease))
    if defect:
        app.faults.inject(defect)

    @app.step(name="work")
    def work(wid: str, step: int) -> str:
        with counter_lock:
            nonce = f"{os.getpid()}-{next(counter)}"
        log("start", w=wid, step=step, nonce=nonce, owner=app._owner)
        time.sleep(STEP_SECONDS)
        log("end", w=wid, step=step, nonce=nonce)
        return nonce

    @app.workflow(name="job")
    def job(wid: str) -> list[str]:
        return [work(wid, step) for step in range(STEPS)]

    with app:
        log("owner", owner=app._owner, k=index)
        due = [(float(t0) + (4 * i + index) * float(pace), f"job-{index}-{i}")
               for i in range(PER_WORKER)]
        while not os.path.exists(stop_file):
            while due and due[0][0] <= _real_time():
                wid = due.pop(0)[1]
                app.start(job, wid, workflow_id=wid)  # idempotent: an existing id is left be
            time.sleep(0.02)


if __name__ == "__main__":
    main()
