"""The workflows of ``test_process_death``, and a child process that runs them until it dies.

Every step body and every acknowledged commit appends a line to a ledger file opened with
``O_APPEND`` (one ``write`` per line, so lines from several processes never interleave and
their order in the file is the order they happened)::

    begin <workflow id> <step> <pid>    a step body started
    end <workflow id> <step> <pid>      it returned (its value carries the pid)
    commit <workflow id> <step> <pid>   the engine said its row was committed (after_commit)
    claim <workflow id> - <pid>         the process took the workflow over (recovery)
    branch <workflow id> <name> <pid>   code after a select ran, for the branch <name>

Run as a child::

    python ledger_child.py CONFIG.json

CONFIG keys: ``db``, ``ledger``, ``start`` (``[[workflow name, workflow id, argument], ...]``
to start, idempotently), ``lease``, ``step_delay``, ``first_delay``, ``hold_first`` (see
``build``),
``exit_at`` (``[point, nth]``: ``os._exit`` the nth time the engine reaches that crash point, or
null), ``stay`` (keep running, taking over other processes' workflows, until killed) and
``broken`` (null, or the name of a deliberately broken engine variant: one of the fault
seam's ``DEFECTS``, injected with ``app.faults.inject``). The child prints ``launched`` once
its workflows are started and ``done`` when they have finished.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import litedurable as ld

EXIT_CODE = 70  # what a child that died at a named crash point exits with


class Ledger:
    """The side-effect ledger: an ``O_APPEND`` file shared by every process of a test."""

    def __init__(self, path: str) -> None:
        self.path = path

    def append(self, event: str, workflow_id: str, detail: object) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{event} {workflow_id} {detail} {os.getpid()}\n".encode())
        finally:
            os.close(fd)

    def lines(self) -> list[tuple[str, str, str, int]]:
        """Every line so far, as (event, workflow id, step or branch, pid)."""
        try:
            with open(self.path) as f:
                text = f.read()
        except FileNotFoundError:
            return []
        parsed = []
        for line in text.splitlines():
            event, workflow_id, detail, pid = line.split(" ")
            parsed.append((event, workflow_id, detail, int(pid)))
        return parsed

    def wait_for(self, event: str, workflow_id: str, detail: object, *,
                 pid: int | None = None, timeout: float = 10.0) -> None:
        """Block until that line was logged (by ``pid``, or by any process)."""
        deadline = time.monotonic() + timeout
        while not any(e == event and w == workflow_id and d == str(detail)
                      and pid in (None, p) for e, w, d, p in self.lines()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no '{event} {workflow_id} {detail}' in the ledger")
            time.sleep(0.005)


def step_value(x: int) -> int:
    return x * 3 + 1


def job_values(steps: int) -> list[int]:
    """The values ``job(steps)`` returns (without the pids that produced them)."""
    return [step_value(i) for i in range(steps)] + [step_value(100), step_value(101)]


def build(path: str, ledger: Ledger, *, lease: float = 10.0, step_delay: float = 0.0,
          first_delay: float | None = None, hold_first: bool = False,
          ) -> tuple[ld.App, dict[str, Callable[..., Any]]]:
    """The App every process of a test runs: the same workflows, the same version.

    Each ``work`` body sleeps ``step_delay`` seconds (``first_delay`` for ``work(0)``); with
    ``hold_first`` the body of ``work(0)`` then waits until this process has claimed its
    workflow (taken it over) before it returns.
    """
    app = ld.App(path, workers=4, lease=lease, app_version="ledger")

    @app.step()
    def work(x: int) -> list[int] | None:  # None: the row of the record_before_body defect
        workflow_id, step = ld.idempotency_key().rsplit(":", 1)
        ledger.append("begin", workflow_id, step)
        time.sleep(first_delay if x == 0 and first_delay is not None else step_delay)
        if x == 0 and hold_first:
            ledger.wait_for("claim", workflow_id, "-", pid=os.getpid(), timeout=30)
        ledger.append("end", workflow_id, step)
        return [os.getpid(), step_value(x)]

    @app.workflow(name="job")
    def job(steps: int) -> list[list[int] | None]:
        """Inline steps, then a race of two go steps (a select) joined by wait_all."""
        done = [work(i) for i in range(steps)]
        pair = [ld.go(work, 100), ld.go(work, 101)]
        ld.select(pair)
        return done + ld.wait_all(pair)

    @app.step()
    def slow() -> str:
        ledger.wait_for("branch", ld.workflow_id(), "fast")  # loses the race the first time
        return "slow"

    @app.step()
    def fast() -> str:
        return "fast"

    @app.step()
    def ship(branch: str) -> str:
        """The code after the select: it logs its branch, then waits for the loser's commit."""
        ledger.append("branch", ld.workflow_id(), branch)
        ledger.wait_for("commit", ld.workflow_id(), 0)
        return branch

    @app.workflow(name="race")
    def race() -> str:
        """``slow`` takes step 0, ``fast`` step 1: fast wins, unless both are settled (replay)."""
        contenders = [ld.go(slow), ld.go(fast)]
        return ship(ld.select(contenders).result())

    return app, {"job": job, "race": race}


def ledger_hook(ledger: Ledger, exit_at: tuple[str, int] | None
                ) -> Callable[[str, Mapping[str, object]], None]:
    """Log every acknowledged commit and claim; die at ``exit_at`` (point, nth) if given."""
    seen = 0
    lock = threading.Lock()

    def hook(point: str, info: Mapping[str, object]) -> None:
        nonlocal seen
        if point == "after_commit":
            ledger.append("commit", str(info["workflow_id"]), info["step"])
        if point == "recovery":
            for workflow_id in info["workflow_ids"]:  # type: ignore[attr-defined]
                ledger.append("claim", workflow_id, "-")
        if exit_at is not None and point == exit_at[0]:
            with lock:
                seen += 1
                if seen == exit_at[1]:
                    os._exit(EXIT_CODE)

    return hook


def main(config_path: str) -> None:
    with open(config_path) as f:
        config = json.load(f)
    ledger = Ledger(config["ledger"])
    app, workflows = build(config["db"], ledger, lease=config["lease"],
                           step_delay=config["step_delay"], first_delay=config.get("first_delay"),
                           hold_first=config.get("hold_first", False))
    exit_at = config.get("exit_at")
    app.faults.callback = ledger_hook(ledger, tuple(exit_at) if exit_at else None)
    if config.get("broken"):
        app.faults.inject(config["broken"])
    app.launch()
    handles = [app.start(workflows[name], *([] if arg is None else [arg]), workflow_id=wid)
               for name, wid, arg in config["start"]]
    print("launched", flush=True)
    for handle in handles:
        handle.result()
    print("done", flush=True)
    if config.get("stay"):
        threading.Event().wait()  # keep taking over others' workflows until killed
    app.close()


if __name__ == "__main__":
    main(sys.argv[1])
